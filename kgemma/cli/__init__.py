"""Command-line interfaces; they depend on everything and nothing depends on them."""

"""Named training recipes: sets of `TrainingConfig` settings that explicit settings override.

Each recipe is measured in docs/results.md, with the command that reproduces it; the
settings were chosen on validation rows of IMDB's train split, never on a test split.
"""

from collections import namedtuple

from kgemma.training.config import TrainingConfig

Recipe = namedtuple("Recipe", ["summary", "settings"])

RECIPES = {
    # TrainingConfig's defaults are the fine-tuning report's recipe.
    "report": Recipe("the fine-tuning report's: LoRA r8/alpha 16 on query and value of every block, AdamW 2e-4, 3 epochs", {}),
}


def recipe_settings(name):
    """The settings a named recipe changes from `TrainingConfig`'s defaults."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return dict(RECIPES[name].settings)


def recipe_config(name, **overrides):
    """A `TrainingConfig` for a named recipe, with `overrides` taking precedence.

    Args:
        name: a key of `RECIPES` (`"report"`: the fine-tuning report's
            hyperparameters, which are `TrainingConfig`'s defaults).
        **overrides: any `TrainingConfig` field.

    Example:
    ```python
    from kgemma.training import recipe_config

    config = recipe_config("report", max_examples=400, epochs=1)
    config.lora_rank, config.max_examples
    # (8, 400)
    ```
    """
    return TrainingConfig.from_dict({**recipe_settings(name), **overrides})

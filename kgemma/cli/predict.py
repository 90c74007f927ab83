"""`kgemma-predict`: score unlabelled reviews into a JSONL or CSV file."""

import click

from kgemma.cli.common import load_classifier
from kgemma.cli.common import model_options
from kgemma.cli.common import progress_printer
from kgemma.cli.common import user_errors_as_messages
from kgemma.cli.common import verbose_option

EPILOG = """\b
Examples:
  kgemma-predict --adapter runs/r1/adapter.npz reviews.txt --output scores.jsonl
  kgemma-predict --adapter runs/r1/adapter.npz shop.csv --text-field body --id-field sku --output scores.csv
  cat reviews.txt | kgemma-predict --model model.keras - --output scores.jsonl
  # Killed half-way? The same command again scores only the rows still missing.
"""

# Bad rows listed one by one up to this many; beyond it, a count.
SHOWN_BAD_ROWS = 20


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@model_options
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Scores file: .csv, else JSONL. An existing one from an interrupted run is continued.",
)
@click.option("--text-field", default="text", show_default=True, help="JSONL field or CSV column of the text.")
@click.option("--id-field", default="id", show_default=True, help="JSONL field or CSV column of the row id.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--strict", is_flag=True, help="Refuse inputs with bad rows instead of skipping them.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@verbose_option
@user_errors_as_messages
def main(inputs, model_path, adapter_path, preset, dtype, output_path, text_field, id_field, batch_size, strict, quiet):
    """Score unlabelled reviews: INPUTS are .txt files (a review a line), .jsonl, .csv or .tsv
    files (also .gz), or - for standard input. Each output row holds the input's file, line and
    id, the predicted label, each class's probability, the review's tokens and whether it was
    truncated, in input order. Bad rows (empty text, bytes that are not UTF-8, broken JSON) are
    listed with their line numbers and skipped, or refused with --strict."""
    from kgemma.data.unlabelled import read_texts
    from kgemma.prediction import predict_to_file

    rows, bad = read_texts(inputs, text_field=text_field, id_field=id_field)
    if bad:
        report_bad_rows(bad, refused=strict)
        if strict:
            raise click.ClickException(f"{len(bad)} bad rows (first: {bad[0]}); nothing was scored.")
    if not rows:
        raise click.ClickException("The inputs hold no review to score.")
    classifier = load_classifier(model_path, adapter_path, preset, dtype)
    scored = predict_to_file(
        classifier, rows, output_path, batch_size=batch_size, on_progress=None if quiet else progress_printer("Scoring")
    )
    kept = len(rows) - scored
    click.echo(
        f"Scored {scored} reviews into {output_path}"
        + (f" ({kept} were there from an earlier run)" if kept else "")
        + (f"; skipped {len(bad)} bad rows." if bad else ".")
    )


def report_bad_rows(bad, refused):
    verb = "Refused" if refused else "Skipping"
    click.echo(f"{verb} {len(bad)} rows that cannot be scored:", err=True)
    for row in bad[:SHOWN_BAD_ROWS]:
        click.echo(f"  {row}", err=True)
    if len(bad) > SHOWN_BAD_ROWS:
        click.echo(f"  ... and {len(bad) - SHOWN_BAD_ROWS} more", err=True)

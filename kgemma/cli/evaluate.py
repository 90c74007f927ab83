"""`kgemma-eval`: evaluate a sentiment classifier and write its report."""

import contextlib
import json
from pathlib import Path

import click

from kgemma.cli.common import distribution_options
from kgemma.cli.common import file_fields
from kgemma.cli.common import load_classifier
from kgemma.cli.common import make_distribution
from kgemma.cli.common import model_options
from kgemma.cli.common import progress_printer
from kgemma.cli.common import user_errors_as_messages
from kgemma.cli.common import verbose_option
from kgemma.evaluation.run import EXPLAIN_METHOD
from kgemma.model.explain import METHODS

EPILOG = """\b
Examples:
  # A trained adapter on 2,000 sampled IMDB test reviews from a local copy:
  kgemma-eval --adapter runs/small/adapter.npz --data ../shared/data/imdb --max-examples 2000 --output runs/small/eval
  # A saved .keras model, with contrast pairs and a custom slice:
  kgemma-eval --model model.keras --data ../shared/data/imdb --max-examples 500 \\
      --contrast dev_original.tsv dev_contrast.tsv --slice spoilers='spoiler' --output eval
  # Four workers score a quarter each (any machines), then one merges the report:
  kgemma-eval --adapter a.npz --data ../shared/data/imdb --shard 0/4 --output eval/shard0   # ... up to 3/4
  kgemma-eval --data ../shared/data/imdb --merge eval/shard0 --merge eval/shard1 \\
      --merge eval/shard2 --merge eval/shard3 --output eval
"""


def adapter_base(adapter_path):
    """The base preset an adapter records (None: the embedded model, or no adapter)."""
    from kgemma.model.adapter import read_adapter

    return read_adapter(adapter_path)[0]["base_model"]["preset"] if adapter_path else None


def run_info(model_path, adapter_path):
    """The training run folder's settings and history, when the model sits in one."""
    folder = Path(model_path or adapter_path).parent
    run, history = folder / "run.json", folder / "history.json"
    return (
        json.loads(run.read_text()) if run.is_file() else None,
        json.loads(history.read_text()) if history.is_file() else None,
    )


def training_rows(run, source, data_dir, fields, seed, calibration_examples):
    """Rows for the baseline and for temperature fitting: the run's own training and
    validation rows when the run folder is known, else a split of the source's train split."""
    from kgemma.data import is_single_file
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample
    from kgemma.data import train_validation_split

    if run is not None:
        from kgemma.training import TrainingConfig
        from kgemma.training import load_training_data

        config = TrainingConfig.from_dict(run["config"])
        train, validation, _ = load_training_data(run["data_source"], config, **run.get("fields", {}))
        return train, validation
    if is_single_file(source):
        return None, None
    train, validation = train_validation_split(load_imdb("train", source, data_dir, **fields), seed=seed)
    return train, stratified_sample(validation, calibration_examples, seed=seed)


def score_shard(shard, reviews, score, out, model_path, adapter_path, settings, fingerprint):
    """Score one worker's share of the rows into `out`, for a later `--merge`."""
    from kgemma.evaluation import parse_shard
    from kgemma.evaluation import shard_rows
    from kgemma.evaluation import stream_predictions
    from kgemma.evaluation import write_shard_info

    index, count = parse_shard(shard)
    rows = shard_rows(len(reviews), index, count)
    stream_predictions(
        out / "predictions.jsonl",
        reviews.subset(rows),
        score,
        on_progress=progress_printer(f"Shard {shard}"),
        model=fingerprint,
    )
    paths = {
        "model": model_path and str(Path(model_path).resolve()),
        "adapter": adapter_path and str(Path(adapter_path).resolve()),
    }
    write_shard_info(out, index, count, len(reviews), {**paths, "settings": settings})
    click.echo(
        f"Shard {index}/{count}: scored {len(rows)} of {len(reviews)} rows into {out}. "
        "Merge all shards with kgemma-eval --merge DIR0 --merge DIR1 ... and the same data options."
    )


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@model_options
@click.option(
    "--frozen-int8/--no-frozen-int8",
    default=None,
    help=(
        "Score the blocks' frozen projections as int8 matmuls (KERAS_BACKEND=torch); default: as the adapter "
        "was trained (kgemma-train --frozen-int8)."
    ),
)
@click.option(
    "--data",
    "data_source",
    default=None,
    help=(
        "'tfds', an aclImdb folder, a folder with test.jsonl.gz, or any labelled .jsonl/.csv/.tsv file. "
        "Default: $KGEMMA_IMDB_DIR, else tfds."
    ),
)
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
    help="IMDB split (ignored for a single file).",
)
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--label-field", default="label", show_default=True)
@click.option(
    "--max-examples",
    type=click.IntRange(min=2),
    default=None,
    help="Evaluate a stratified, seeded sample of this many rows.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--slice",
    "slice_rules",
    multiple=True,
    metavar="NAME=REGEX",
    help="An extra slice: reviews whose normalized text matches REGEX. Repeatable.",
)
@click.option(
    "--contrast",
    "contrast_tsv",
    nargs=2,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="ORIGINAL EDITED",
    help="Aligned contrast TSV files (Sentiment<TAB>Text). Repeatable.",
)
@click.option(
    "--contrast-pairs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A JSONL file of contrast pairs. Repeatable.",
)
@click.option(
    "--temperature-scaling/--no-temperature-scaling",
    default=False,
    show_default=True,
    help="Fit a temperature on validation rows (never test rows) and apply it.",
)
@click.option(
    "--calibration-examples",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Validation rows for temperature scaling when the training run is unknown.",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Train and score a TF-IDF + logistic regression baseline on the same rows.",
)
@click.option(
    "--explain",
    "explain_count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="Explain each slice's N most confident mistakes, and N pairs of each contrast set, in the reports.",
)
@click.option(
    "--explain-method",
    type=click.Choice(METHODS),
    default=EXPLAIN_METHOD,
    show_default=True,
    help="How --explain attributes a prediction to words (docs/explanations.md).",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["json", "md", "html"]),
    default=("json", "md", "html"),
    show_default=True,
)
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Report folder; predictions.jsonl there lets an interrupted run resume.",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Score only rows I, I+N, I+2N, ... into --output (one worker of N), and write no report.",
)
@click.option(
    "--merge",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A --shard output folder; give all N to merge their predictions into one report, exactly as one run would.",
)
@verbose_option
@distribution_options
@user_errors_as_messages
def main(
    model_path,
    adapter_path,
    preset,
    dtype,
    frozen_int8,
    data_source,
    split,
    data_dir,
    text_field,
    label_field,
    max_examples,
    seed,
    batch_size,
    slice_rules,
    contrast_tsv,
    contrast_pairs,
    temperature_scaling,
    calibration_examples,
    baseline,
    explain_count,
    explain_method,
    formats,
    output_dir,
    shard,
    merge,
    distribution,
    devices,
    model_parallel,
    multi_worker,
):
    """Evaluate a Gemma sentiment classifier: metrics with confidence intervals,
    calibration, nuanced-review slices, contrast pairs, a baseline, and a report."""
    from kgemma.data import default_imdb_source
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample
    from kgemma.evaluation import BUILTIN_SLICES
    from kgemma.evaluation import classifier_explainer
    from kgemma.evaluation import classifier_scorer
    from kgemma.evaluation import custom_slice
    from kgemma.evaluation import merge_shards
    from kgemma.evaluation import read_contrast
    from kgemma.evaluation import run_evaluation
    from kgemma.evaluation.report import slice_table
    from kgemma.evaluation.report import summary_rows

    slices = list(BUILTIN_SLICES)
    for rule in slice_rules:
        name, sep, pattern = rule.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=REGEX, got {rule!r}", param_hint="--slice")
        slices.append(custom_slice(name, pattern))
    fields = file_fields(text_field, label_field)
    source = data_source or default_imdb_source()
    reviews = load_imdb(split, source, data_dir, **fields)
    if max_examples:
        reviews = stratified_sample(reviews, max_examples, seed=seed)
    contrast_sets = [(f"{Path(o).name} / {Path(e).name}", read_contrast([o, e])) for o, e in contrast_tsv]
    contrast_sets += [(Path(p).name, read_contrast([p])) for p in contrast_pairs]

    out = Path(output_dir)
    score = fingerprint = predictions = explain = None
    if merge:
        if model_path or adapter_path or temperature_scaling or contrast_sets or explain_count:
            raise click.UsageError(
                "--merge combines shards' predictions: pass no --model, --adapter, --temperature-scaling, "
                "--contrast or --explain."
            )
        logits, n_tokens, info = merge_shards(merge, reviews)
        model_path, adapter_path, settings = info["model"], info["adapter"], info["settings"]
        predictions = (logits, n_tokens)
    else:
        if distribution == "data":
            raise click.UsageError(
                "Evaluation scales out by --shard I/N (one worker per device or host); --distribution model "
                "splits a model too big for one device."
            )
        plan = None
        if distribution != "none":
            plan = make_distribution(
                distribution, devices, model_parallel, multi_worker, preset or adapter_base(adapter_path)
            )
        with plan.scope() if plan else contextlib.nullcontext():
            classifier = load_classifier(model_path, adapter_path, preset, dtype, frozen_int8)
        settings = classifier.rebuild_config()
        fingerprint = classifier.fingerprint()
        score = classifier_scorer(classifier, batch_size)
        if explain_count:
            explain = classifier_explainer(
                classifier, explain_method, batch_size, on_progress=progress_printer(f"Explaining ({explain_method})")
            )
        if shard:
            return score_shard(shard, reviews, score, out, model_path, adapter_path, settings, fingerprint)

    run, history = run_info(model_path, adapter_path)
    train, validation = (
        training_rows(run, source, data_dir, fields, seed, calibration_examples)
        if (baseline or temperature_scaling)
        else (None, None)
    )
    if temperature_scaling and validation is None:
        raise click.UsageError(
            "--temperature-scaling needs validation rows: use an IMDB source or the model's run folder."
        )
    metrics = run_evaluation(
        reviews,
        score,
        out,
        model_info={"model": model_path, "adapter": adapter_path, "settings": settings},
        fingerprint=fingerprint,
        predictions=predictions,
        train=train if baseline else None,
        validation=validation,
        temperature_scaling=temperature_scaling,
        slices=slices,
        contrast_sets=contrast_sets,
        formats=formats,
        history=history,
        title=f"kgemma evaluation: {Path(model_path or adapter_path).name}",
        seed=seed,
        on_progress=progress_printer("Scoring"),
        explain=explain,
        explain_count=explain_count,
    )

    width = max(len(label) for label, _ in summary_rows(metrics))
    for label, value in summary_rows(metrics):
        click.echo(f"{label:<{width}}  {value}")
    header, rows = slice_table(metrics)
    click.echo("\n" + "  ".join(f"{h:>14}" for h in header))
    for row in rows:
        click.echo("  ".join(f"{c:>14}" for c in row))
    for c in metrics["contrast"]:
        click.echo(
            f"\ncontrast {c['name']}: original {c['original_accuracy']:.1%}, edited {c['edited_accuracy']:.1%}, "
            f"consistency {c['consistency']:.1%} ({c['n_pairs']} pairs)"
        )
    click.echo(f"\nReport: {out / 'report.md'}, {out / 'report.html'}, {out / 'metrics.json'}")


if __name__ == "__main__":
    main()

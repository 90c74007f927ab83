"""`kgemma-train`: fine-tune a Gemma sentiment classifier with LoRA."""

import json
import os
import sys

import click
from click.core import ParameterSource

from kgemma.cli.common import distribution_options
from kgemma.cli.common import file_fields
from kgemma.cli.common import make_distribution
from kgemma.cli.common import user_errors_as_messages
from kgemma.cli.common import verbose_option
from kgemma.model.dtypes import DTYPE_CHOICES
from kgemma.model.int8 import INT8_DEFAULT
from kgemma.model.lora import LORA_TARGETS
from kgemma.model.pooling import POOLING_MODES
from kgemma.model.truncation import TRUNCATIONS
from kgemma.scaling import WorkerLostError
from kgemma.training.config import SCHEDULES
from kgemma.training.config import TrainingConfig
from kgemma.training.recipes import RECIPES

# Every default below is the library's own (TrainingConfig), never a second copy.
DEFAULTS = TrainingConfig()

RECIPE_HELP = "Named defaults (docs/results.md); options given explicitly override them. " + "; ".join(
    f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()
)

EPILOG = """\b
Examples:
  # The report's recipe on 400 real reviews from a local IMDB copy, embedded model:
  kgemma-train --data ../shared/data/imdb --max-examples 400 --output runs/small
  # A named recipe, with one of its settings overridden:
  kgemma-train --recipe report --epochs 1 --data ../shared/data/imdb --max-examples 400 --output runs/r1
  # Killed? Continue at the last checkpoint:
  kgemma-train --data ../shared/data/imdb --max-examples 400 --output runs/small --resume
  # Full IMDB train split from tensorflow-datasets, Gemma 2B, wider LoRA:
  kgemma-train --preset gemma_2b_en --lora-targets all --output runs/2b
  # Data parallel over 8 GPUs (JAX: KERAS_BACKEND=jax; TensorFlow: MirroredStrategy):
  kgemma-train --preset gemma2_2b_en --distribution data --batch-size 64 --output runs/2b-dp
"""


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@click.option(
    "--preset",
    default=None,
    help=(
        "Base model: keras-hub Gemma preset, kaggle:// or hf:// handle, preset folder or .gguf file. "
        "Default: the embedded Gemma 3 270M."
    ),
)
@click.option(
    "--data",
    "data_source",
    default=None,
    help=(
        "IMDB source: 'tfds' (default), an aclImdb folder, a folder with train.jsonl.gz, or a labelled "
        ".jsonl/.csv/.tsv file. Default: $KGEMMA_IMDB_DIR, else tfds."
    ),
)
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option("--text-field", default="text", show_default=True, help="Text column of JSONL/CSV files.")
@click.option("--label-field", default="label", show_default=True, help="Label column of JSONL/CSV files.")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="report", show_default=True, help=RECIPE_HELP)
@click.option(
    "--max-examples",
    type=click.IntRange(min=2),
    default=None,
    help="Train on a stratified, seeded sample of this many rows (before the 90/10 split).",
)
@click.option("--sequence-length", type=click.IntRange(min=2), default=DEFAULTS.sequence_length, show_default=True)
@click.option("--truncation", type=click.Choice(TRUNCATIONS), default=DEFAULTS.truncation, show_default=True)
@click.option("--pooling", type=click.Choice(POOLING_MODES), default=DEFAULTS.pooling, show_default=True)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.dropout,
    show_default=True,
    help="Dropout before the classification head.",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.label_smoothing,
    show_default=True,
    help="Share of each training label spread over the classes.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, show_default=True)
@click.option(
    "--learning-rate", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.learning_rate, show_default=True
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=DEFAULTS.weight_decay, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default=DEFAULTS.schedule, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=DEFAULTS.warmup_steps, show_default=True)
@click.option(
    "--grad-accum",
    "gradient_accumulation_steps",
    type=click.IntRange(min=1),
    default=DEFAULTS.gradient_accumulation_steps,
    show_default=True,
)
@click.option(
    "--patience",
    "early_stopping_patience",
    type=click.IntRange(min=1),
    default=DEFAULTS.early_stopping_patience,
    show_default=True,
    help="Early-stopping patience in epochs (validation loss).",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULTS.validation_fraction,
    show_default=True,
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=0),
    default=DEFAULTS.lora_rank,
    show_default=True,
    help="0 trains the head alone.",
)
@click.option("--lora-alpha", type=float, default=DEFAULTS.lora_alpha, show_default=True)
@click.option(
    "--lora-dropout", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS.lora_dropout, show_default=True
)
@click.option("--lora-targets", type=click.Choice(list(LORA_TARGETS)), default=DEFAULTS.lora_targets, show_default=True)
@click.option(
    "--lora-layers",
    type=click.IntRange(min=1),
    default=None,
    help="Adapt only the top N decoder blocks (default: all). The blocks below run forward-only.",
)
@click.option(
    "--backbone-layers",
    type=click.IntRange(min=1),
    default=None,
    help="Keep only the backbone's first N decoder blocks (default: all); --lora-layers counts from the top of those.",
)
@click.option(
    "--cache-prefix/--no-cache-prefix",
    default=DEFAULTS.cache_prefix,
    show_default=True,
    help="With --lora-layers: compute the frozen lower blocks once per review and reuse them every epoch.",
)
@click.option(
    "--prefix-cache",
    type=click.Path(file_okay=False),
    default=None,
    help=(
        "Keep the cached prefix's states in this folder (memory-mapped) and reuse them in later runs "
        "over the same reviews, base model, dtype and depth. Training times still count the prefix pass."
    ),
)
@click.option(
    "--jit-compile/--no-jit-compile",
    default=None,
    help="Compile train and predict steps with XLA (default: Keras decides; no XLA on a CPU).",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default=DEFAULTS.dtype,
    show_default=True,
    help=(
        "Backbone dtype. auto: bfloat16 on CPUs with AVX512-BF16 or AMX (about 2x float32's matmul speed), "
        "else float32. LoRA and head stay float32."
    ),
)
@click.option(
    "--frozen-int8/--no-frozen-int8",
    default=None,
    show_default=f"the machine's: {INT8_DEFAULT}",
    help=(
        "Run the blocks' frozen projections (LoRA branches and head stay float) as int8 matmuls, in training, "
        "in the prefix pass and in scoring (KERAS_BACKEND=torch; docs/performance.md)."
    ),
)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=DEFAULTS.checkpoint_every,
    show_default=True,
    help="Steps between resumable checkpoints.",
)
@click.option("--drop-overlap", is_flag=True, help="Drop training rows whose text also occurs in the test split.")
@click.option(
    "--price-per-hour",
    type=click.FloatRange(min=0),
    default=None,
    help="Machine price, for the summary's cost estimate.",
)
@click.option(
    "--save-keras/--no-save-keras",
    default=True,
    show_default=True,
    help="Also save the full model as model.keras (about 1 GB for the 270M model).",
)
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder for checkpoints and outputs.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write TensorBoard logs here: loss, accuracy, learning rate and reviews/s per step, validation per epoch.",
)
@verbose_option
@distribution_options
@user_errors_as_messages
def main(
    preset,
    data_source,
    data_dir,
    text_field,
    label_field,
    output_dir,
    resume,
    save_keras,
    quiet,
    tensorboard_dir,
    prefix_cache,
    recipe,
    distribution,
    devices,
    model_parallel,
    multi_worker,
    **settings,
):
    """Fine-tune a Gemma sentiment classifier with LoRA on IMDB or a labelled file.

    Defaults follow the fine-tuning report: LoRA rank 8, alpha 16, dropout 0.1 on
    query/value, AdamW 2e-4, 3 epochs, early stopping (patience 5), 90/10 split.
    """
    from kgemma.data import default_imdb_source
    from kgemma.training import TensorBoard
    from kgemma.training import recipe_config
    from kgemma.training import run_training

    # The recipe supplies every setting not given on the command line.
    context = click.get_current_context()
    given = {
        name: value
        for name, value in settings.items()
        if context.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    config = recipe_config(recipe, **given)
    source = data_source or default_imdb_source()
    fields = file_fields(text_field, label_field)
    try:
        _, summary = run_training(
            config,
            output_dir,
            preset=preset,
            data_source=source,
            data_dir=data_dir,
            resume=resume,
            save_keras=save_keras,
            verbose=0 if quiet else 1,
            prefix_cache=prefix_cache,
            callbacks=None if tensorboard_dir is None else [TensorBoard(tensorboard_dir)],
            distribution=make_distribution(distribution, devices, model_parallel, multi_worker, preset),
            **fields,
        )
    except WorkerLostError as e:
        click.echo(f"Error: {e} Its last checkpoint is kept: add --resume to go on from it.", err=True)
        sys.stdout.flush()
        # Not a normal exit: with a peer gone, JAX's runtime would wait for it at exit
        # (its heartbeat timeout, 100 s) and then abort. Every file is already written.
        os._exit(1)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"Outputs in {output_dir}: adapter.npz, summary.json, history.*, learning_curve.png")


if __name__ == "__main__":
    main()

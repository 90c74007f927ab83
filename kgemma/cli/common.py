"""What the kgemma commands share: turning library errors into one-line messages."""

import functools

import click

from kgemma.model.dtypes import DTYPE_CHOICES
from kgemma.startup import VERBOSE_FLAG

# Errors a user can fix from the message alone: shown as one line, exit code 1.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, TypeError, ImportError, FloatingPointError)


# Read from the command line by kgemma.startup before the library loads; declared here
# so that click accepts it and lists it in --help.
verbose_option = click.option(
    VERBOSE_FLAG,
    is_flag=True,
    expose_value=False,
    help="Also show TensorFlow's start-up lines and its C++ info and warning logs, which kgemma's commands hide.",
)


def file_fields(text_field, label_field):
    """`read_reviews` keyword arguments for non-default JSONL/CSV column names."""
    if (text_field, label_field) == ("text", "label"):
        return {}
    return {"text_field": text_field, "label_field": label_field}


def user_errors_as_messages(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from e

    return wrapper


def distribution_options(command):
    """`--distribution`, `--devices`, `--model-parallel`, `--multi-worker`: shared by the CLIs."""
    options = [
        click.option(
            "--distribution",
            type=click.Choice(["none", "data", "model"]),
            default="none",
            show_default=True,
            help=(
                "data: data parallel (JAX keras.distribution, or tf.distribute Mirrored); model: weights split "
                "over devices (JAX backend)."
            ),
        ),
        click.option(
            "--devices",
            type=click.IntRange(min=1),
            default=None,
            help="Devices to use (default: all the backend sees).",
        ),
        click.option(
            "--model-parallel",
            type=click.IntRange(min=1),
            default=None,
            help="With --distribution model: devices per model replica (default: all).",
        ),
        click.option(
            "--multi-worker",
            is_flag=True,
            help=(
                "With --distribution data: one process per host, over the hosts in TF_CONFIG (TensorFlow's "
                "MultiWorkerMirroredStrategy) or KERAS_DISTRIBUTION_* (JAX); kgemma-launch sets both on one host."
            ),
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def model_options(command):
    """`--model`, `--adapter`, `--preset`, `--dtype`: which trained classifier to load
    (`load_classifier`); shared by kgemma-eval and kgemma-predict."""
    options = [
        click.option(
            "--model", "model_path", type=click.Path(exists=True, dir_okay=False), help="A saved .keras model."
        ),
        click.option(
            "--adapter",
            "adapter_path",
            type=click.Path(exists=True, dir_okay=False),
            help="An adapter .npz from kgemma-train or save_adapter().",
        ),
        click.option(
            "--preset", default=None, help="Base model for --adapter (default: the one recorded in the adapter)."
        ),
        click.option(
            "--dtype",
            type=click.Choice(DTYPE_CHOICES),
            default=None,
            help=(
                "Backbone dtype for --adapter (default: the one it was trained in); auto: bfloat16 on CPUs "
                "with AVX512-BF16 or AMX, else float32."
            ),
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_distribution(distribution, devices, model_parallel, multi_worker, preset):
    """The distribution plan the CLI options ask for."""
    from kgemma.scaling import create_distribution

    config = None
    if distribution == "model":
        from kgemma.presets import backbone_config

        config = backbone_config(preset)
    return create_distribution(
        distribution, devices=devices, model_parallel=model_parallel, backbone_config=config, multi_worker=multi_worker
    )


def load_classifier(model_path, adapter_path, preset, dtype=None, frozen_int8=None):
    """A classifier from a `.keras` file or an adapter (on its base preset); `frozen_int8`
    (`None`: as saved) as `GemmaSentimentClassifier` takes it."""
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma.model.frozen_prefix import check_int8

    if bool(model_path) == bool(adapter_path):
        raise click.UsageError("Pass exactly one of --model or --adapter.")
    if adapter_path:
        given = {} if frozen_int8 is None else {"frozen_int8": frozen_int8}
        return GemmaSentimentClassifier.from_adapter(adapter_path, preset=preset, dtype=dtype, **given)
    try:
        model = keras.saving.load_model(model_path)
    except Exception as e:
        raise ValueError(
            f"Could not load the model {model_path}: corrupt or not a kgemma .keras file ({type(e).__name__})."
        ) from e
    if not isinstance(model, GemmaSentimentClassifier):
        raise ValueError(f"{model_path} holds a {type(model).__name__}, not a GemmaSentimentClassifier.")
    if frozen_int8 is not None:
        model.frozen_int8 = check_int8(frozen_int8, model.backbone)
    return model


def progress_printer(label):
    """`on_progress(done, total, reviews_per_s=None)` for the scoring loops: a click
    progress bar, its label showing the last chunk's reviews/s when given."""
    state = {}

    def update(done, total, reviews_per_s=None):
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, show_pos=True, show_eta=True)
            state["bar"].__enter__()
        bar = state["bar"]
        if reviews_per_s:
            bar.label = f"{label} ({reviews_per_s:.1f} reviews/s)"
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)
            del state["bar"]  # A later call (the next batch of explanations) starts a new bar.

    return update

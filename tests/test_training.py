import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kgemma.cli.train import main as train_main
from kgemma.model.batching import WIDTH_STEP
from kgemma.model.batching import epoch_batches
from kgemma.training import TrainingConfig
from kgemma.training.trainer import read_progress
from tests.conftest import randomize_head
from tests.conftest import to_numpy
from tests.conftest import train_cli_args


def test_config_defaults_are_the_reports_recipe():
    c = TrainingConfig()
    assert (c.lora_rank, c.lora_alpha, c.lora_dropout, c.lora_targets) == (8, 16.0, 0.1, "query_value")
    assert (c.learning_rate, c.epochs, c.gradient_accumulation_steps) == (2e-4, 3, 1)
    assert (c.early_stopping_patience, c.validation_fraction) == (5, 0.1)
    assert TrainingConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="Unknown training settings"):
        TrainingConfig.from_dict({"epochz": 2})
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainingConfig(schedule="linear")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        TrainingConfig(label_smoothing=1.0)


def test_label_smoothing_is_keras_categorical_smoothing_on_integer_labels():
    import keras

    from kgemma.training.loss import SparseSmoothedCrossentropy

    logits = np.array([[2.0, -1.0], [0.5, 0.3], [-3.0, 4.0]], dtype="float32")
    labels = np.array([0, 1, 0])
    one_hot = np.eye(2, dtype="float32")[labels]
    for smoothing in (0.0, 0.1, 0.3):
        ours = SparseSmoothedCrossentropy(2, smoothing)(labels, logits)
        theirs = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)(one_hot, logits)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs), rtol=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    smoothed = SparseSmoothedCrossentropy(2, 0.1)(labels, logits)
    assert float(smoothed) != pytest.approx(float(plain))
    # Saved with a model's compile config, it comes back the same.
    again = keras.losses.deserialize(keras.losses.serialize(SparseSmoothedCrossentropy(2, 0.1)))
    assert (again.num_classes, again.label_smoothing, again.from_logits) == (2, 0.1, True)


def test_epoch_batches_cover_every_row_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 256, size=1000)
    batches = epoch_batches(lengths, 8, epoch=0, seed=3, limit=256)
    rows = np.concatenate([r for r, _ in batches])
    assert sorted(rows.tolist()) == list(range(1000))
    assert all(
        lengths[r].max() <= w < lengths[r].max() + WIDTH_STEP and w % WIDTH_STEP == 0 or w == 256 for r, w in batches
    )
    spread = np.mean([lengths[r].max() - lengths[r].min() for r, _ in batches])
    assert spread < 20, "batches mix short and long reviews"
    assert [r.tolist() for r, _ in batches] == [r.tolist() for r, _ in epoch_batches(lengths, 8, 0, 3, 256)]
    assert [r.tolist() for r, _ in batches] != [r.tolist() for r, _ in epoch_batches(lengths, 8, 1, 3, 256)]


def test_scores_do_not_depend_on_batch_padding(make_classifier):
    clf = randomize_head(make_classifier(sequence_length=128))
    features = clf.preprocessor(["A wonderful film.", "Dull and far too long, and then some more of it."])
    narrow = to_numpy(clf({k: np.asarray(v)[:, :64] for k, v in features.items()}, training=False))
    wide = to_numpy(clf(features, training=False))
    assert np.abs(wide).max() > 1e-3
    np.testing.assert_allclose(narrow, wide, atol=1e-5)


def cli_args(preset, data, output, *extra):
    return train_cli_args(preset, data, output, "--learning-rate", "1e-2", *extra)


@pytest.mark.slow
def test_train_command_writes_every_output(tiny_preset, data_file, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        train_main,
        cli_args(
            tiny_preset,
            data_file,
            out,
            "--epochs",
            "2",
            "--max-examples",
            "80",
            "--grad-accum",
            "2",
            "--schedule",
            "cosine",
            "--warmup-steps",
            "3",
            "--price-per-hour",
            "1.5",
            "--tensorboard",
            str(tmp_path / "logs"),
        ),
    )
    assert result.exit_code == 0, result.output
    steps = event_steps(tmp_path / "logs" / "train")
    assert steps["batch_loss"] == steps["batch_learning_rate"] == steps["batch_reviews_per_s"] == list(range(1, 37))
    assert steps["epoch_loss"] == steps["epoch_learning_rate"] == [0, 1]
    validation = event_steps(tmp_path / "logs" / "validation")  # Keras drops the "val_" there.
    assert validation["epoch_loss"] == validation["epoch_accuracy"] == [0, 1]
    for name in (
        "adapter.npz",
        "model.keras",
        "history.json",
        "history_steps.csv",
        "history_epochs.csv",
        "learning_curve.png",
        "summary.json",
        "checkpoint.npz",
        "run.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["train"] == 72 and summary["data"]["validation"] == 8
    assert summary["steps"] == 2 * 18 and summary["reviews_trained"] == 2 * 72
    assert summary["epochs_run"] == 2 and summary["estimated_training_cost"] > 0
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history["epochs"][0])
    # Warmup from zero, then cosine decay towards zero.
    rates = [s["learning_rate"] for s in history["steps"]]
    assert rates[0] < rates[3] and rates[-1] < rates[3]
    # A second run into the same folder is refused, and nothing there is touched.
    before = (out / "adapter.npz").read_bytes()
    again = CliRunner().invoke(train_main, cli_args(tiny_preset, data_file, out, "--epochs", "2"))
    assert again.exit_code == 1 and "pass --resume" in again.output
    assert (out / "adapter.npz").read_bytes() == before


def event_steps(folder):
    """`{tag: [steps]}` over the TensorBoard event files in `folder`."""
    import tensorflow as tf

    steps = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


@pytest.mark.slow
def test_fit_calls_keras_callbacks_and_stops_when_one_asks(make_classifier, review_rows, tmp_path):
    from kgemma.data import Reviews
    from kgemma.training import TensorBoard
    from kgemma.training.trainer import fit

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_begin(self, logs=None):
            self.calls.append(("train_begin", logs))

        def on_train_batch_end(self, batch, logs=None):
            self.calls.append(("batch", batch, sorted(logs)))

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append(("epoch", epoch, sorted(logs)))
            self.model.stop_training = epoch == 1  # Stop after the second of three epochs.

    reviews = Reviews([r["text"] for r in review_rows[:24]], np.array([r["label"] for r in review_rows[:24]]))
    config = TrainingConfig(epochs=3, batch_size=8, cache_prefix=False, checkpoint_every=1000)
    recorder = Recorder()
    history, progress = fit(
        make_classifier(), reviews, reviews, config, tmp_path / "run", verbose=0, callbacks=[recorder]
    )
    batch_keys = ["accuracy", "learning_rate", "loss", "reviews_per_s"]
    epoch_keys = ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert recorder.calls == [
        ("train_begin", {"global_step": 0}),
        *[("batch", b, batch_keys) for b in range(3)],
        ("epoch", 0, epoch_keys),
        *[("batch", b, batch_keys) for b in range(3)],
        ("epoch", 1, epoch_keys),
    ]
    assert progress["finished"] and len(history.epochs) == 2

    # kgemma's TensorBoard callback carries on a resumed run's step count.
    board = TensorBoard(tmp_path / "logs")
    board.set_model(recorder.model)
    board.on_train_begin({"global_step": 7})
    board.on_train_batch_begin(0)
    board.on_train_batch_end(0, {"loss": 0.5})
    board.on_train_end()
    assert event_steps(tmp_path / "logs" / "train")["batch_loss"] == [8]


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tiny_preset, data_file, tmp_path):
    out = tmp_path / "run"
    assert (
        CliRunner()
        .invoke(
            train_main,
            cli_args(tiny_preset, data_file, out, "--epochs", "1", "--max-examples", "40", "--no-save-keras"),
        )
        .exit_code
        == 0
    )
    result = CliRunner().invoke(
        train_main, cli_args(tiny_preset, data_file, out, "--epochs", "2", "--max-examples", "40", "--resume")
    )
    # It names the setting that changed (save_keras is not a training setting, so not it).
    assert result.exit_code == 1 and "other settings (epochs: 1 -> 2)" in result.output
    fresh = CliRunner().invoke(train_main, cli_args(tiny_preset, data_file, tmp_path / "new", "--resume"))
    assert fresh.exit_code == 1 and "Nothing to resume" in fresh.output


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "x", "label": "maybe"}\n', "line 1: unknown label 'maybe'"),
        ('{"body": "x", "label": 1}\n', "no 'text' field"),
        ("", "holds no reviews"),
    ],
)
@pytest.mark.slow
def test_bad_data_files_get_one_line_errors(tiny_preset, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result = CliRunner().invoke(train_main, cli_args(tiny_preset, path, tmp_path / "run"))
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(train_main, cli_args(tiny_preset, tmp_path / "nope.jsonl", tmp_path / "run"))
    assert missing.exit_code == 1 and "IMDB source not found" in missing.output


def run_train(args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "kgemma.cli.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def adapter_arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files if not k.startswith("__")}


@pytest.mark.slow
def test_a_killed_run_resumes_at_its_last_checkpoint(tiny_preset, data_file, tmp_path):
    # No dropout, so the resumed run must match the uninterrupted one exactly.
    common = ["--epochs", "3", "--max-examples", "200", "--dropout", "0", "--lora-dropout", "0", "--no-save-keras"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run_train(cli_args(tiny_preset, data_file, reference, *common)).wait() == 0

    process = run_train(cli_args(tiny_preset, data_file, killed, *common, "--checkpoint-every", "1"))
    deadline = time.time() + 300
    while time.time() < deadline:
        progress = read_progress(killed) if (killed / "checkpoint.npz").is_file() else None
        if progress and progress["global_step"] >= 60:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    progress = read_progress(killed)
    assert not progress["finished"], "the run ended before it could be killed"
    assert not (killed / "adapter.npz").exists()

    resumed = run_train(cli_args(tiny_preset, data_file, killed, *common, "--checkpoint-every", "1", "--resume"))
    output = resumed.communicate()[0].decode()
    assert resumed.returncode == 0, output
    history = json.loads((killed / "history.json").read_text())
    assert [s["global_step"] for s in history["steps"]] == list(range(1, 3 * 45 + 1))
    expected, got = adapter_arrays(reference / "adapter.npz"), adapter_arrays(killed / "adapter.npz")
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_a_cached_frozen_prefix_trains_exactly_like_the_full_model(tiny_preset, data_file, tmp_path):
    # No dropout: the cached run must take the same steps as the uncached one.
    common = [
        "--epochs",
        "2",
        "--max-examples",
        "60",
        "--dropout",
        "0",
        "--lora-dropout",
        "0",
        "--no-save-keras",
        "--lora-layers",
        "1",
        "--no-jit-compile",
    ]
    runs = {}
    for name, flag in (("cached", "--cache-prefix"), ("full", "--no-cache-prefix")):
        result = CliRunner().invoke(train_main, cli_args(tiny_preset, data_file, tmp_path / name, *common, flag))
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / name / "history.json").read_text())
    cached, full = runs["cached"], runs["full"]
    np.testing.assert_allclose([s["loss"] for s in cached["steps"]], [s["loss"] for s in full["steps"]], atol=1e-4)
    np.testing.assert_allclose(
        [e["val_loss"] for e in cached["epochs"]], [e["val_loss"] for e in full["epochs"]], atol=1e-4
    )
    expected, got = (
        adapter_arrays(tmp_path / "full" / "adapter.npz"),
        adapter_arrays(tmp_path / "cached" / "adapter.npz"),
    )
    # One block's query and value adapters (A, B each), the pooled norm and the dense head.
    assert expected.keys() == got.keys() and len(expected) == 8
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4, err_msg=name)


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="no distribution on torch (test_distribution.py checks the refusal); make test runs this on TensorFlow",
)
def test_train_command_runs_data_parallel(tiny_preset, data_file, tmp_path):
    # One CPU here: a one-replica MirroredStrategy, which still makes every variable a
    # distributed one; tests/test_distribution.py checks two devices step by step.
    out = tmp_path / "run"
    result = CliRunner().invoke(
        train_main,
        cli_args(
            tiny_preset,
            data_file,
            out,
            "--epochs",
            "1",
            "--max-examples",
            "40",
            "--no-save-keras",
            "--distribution",
            "data",
        ),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distribution"]["strategy"] in ("mirrored", "data") and summary["steps"] == 9
    assert (out / "adapter.npz").is_file()


def test_cli_defaults_are_the_training_configs():
    # The recipe fills every option not given, so the CLI's shown defaults must be TrainingConfig's.
    defaults = TrainingConfig().to_dict()
    parsed = train_main.make_context("kgemma-train", ["--output", "unused"]).params
    options = {name: value for name, value in parsed.items() if name in defaults}
    assert len(options) > 20 and {name: defaults[name] for name in options} == options


@pytest.mark.slow
def test_a_recipe_fills_what_the_command_line_does_not_give(tiny_preset, data_file, tmp_path, monkeypatch):
    from kgemma.training import recipes

    assert recipes.recipe_config("report") == TrainingConfig()
    with pytest.raises(ValueError, match="Unknown recipe 'fast'; choose one of"):
        recipes.recipe_config("fast")
    monkeypatch.setitem(
        recipes.RECIPES,
        "report",
        recipes.Recipe("a test recipe", {"epochs": 1, "max_examples": 40, "learning_rate": 1e-3}),
    )
    out = tmp_path / "run"
    # cli_args gives --learning-rate 1e-2 explicitly: it wins over the recipe's 1e-3.
    result = CliRunner().invoke(
        train_main, cli_args(tiny_preset, data_file, out, "--recipe", "report", "--no-save-keras")
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["epochs"], config["max_examples"], config["learning_rate"]) == (1, 40, 1e-2)
    assert config["lora_rank"] == TrainingConfig().lora_rank


def test_training_refuses_a_model_that_would_leave_lora_untrained(make_classifier):
    from kgemma.training.trainer import training_model

    clf = make_classifier(lora_layers=1)
    assert training_model(clf, TrainingConfig(lora_layers=1), 10)[1]
    clf.lora_adapters[0].trainable = False  # As Keras's torch backend once left them.
    for cache in (True, False):
        with pytest.raises(RuntimeError, match="LoRA weights .* not among the model's trainable weights"):
            training_model(clf, TrainingConfig(lora_layers=1, cache_prefix=cache), 10)


def test_kgemma_training_and_keras_fit_train_the_classifier_through_the_fused_blocks(make_classifier, monkeypatch):
    from kgemma.model import fused_blocks
    from kgemma.training.trainer import training_model

    clf = make_classifier()
    model, cached = training_model(clf, TrainingConfig(), 10)
    assert model is clf and not cached  # Without a cached prefix kgemma.training fits the classifier itself.
    traced = []  # The blocks a traced step runs fused.
    fused_block = fused_blocks._fused_block
    monkeypatch.setattr(
        fused_blocks, "_fused_block", lambda block, *args: traced.append(block) or fused_block(block, *args)
    )
    history = clf.fit(["A fine film.", "Dull and far too long."], [1, 0], batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert {id(block) for block in traced} == {id(block) for block in clf.backbone.transformer_layers}


@pytest.mark.parametrize("cache_prefix", [False, True])
def test_the_training_step_is_traced_once_for_every_batch_width(make_classifier, cache_prefix):
    from kgemma.scaling.distribution import SingleDevice
    from kgemma.training.trainer import training_model

    clf = make_classifier(lora_layers=1)
    model, cached = training_model(clf, TrainingConfig(lora_layers=1, cache_prefix=cache_prefix), 10)
    assert cached == cache_prefix
    traces = []  # Python runs of the train step: one per trace of it.
    keras_step = model.train_step
    model.train_step = lambda data: traces.append(1) or keras_step(data)
    rng = np.random.default_rng(0)
    losses = []
    for rows, width in [(4, 16), (4, 32), (3, 48)]:  # Three widths, and a short batch.
        mask = np.ones((rows, width), dtype=bool)
        if cached:
            states = rng.normal(size=(rows, width, clf.backbone.hidden_dim)).astype(model.compute_dtype)
            x = {"hidden_states": states, "padding_mask": mask}
        else:
            x = {"token_ids": rng.integers(1, 50, size=(rows, width)).astype("int32"), "padding_mask": mask}
        logs = SingleDevice().train_on_batch(model, x, rng.integers(0, 2, size=rows))  # As `fit` steps.
        losses.append(float(logs["loss"]))
    assert np.all(np.isfinite(losses)) and len(set(losses)) == 3
    if keras.backend.backend() == "tensorflow":
        # Once: not again for another width, nor for the optimizer's variables created in it.
        assert len(traces) == 1


@pytest.mark.slow
def test_keras_fit_on_texts_takes_the_same_steps_as_kgemma_training(make_classifier, review_rows, tmp_path):
    import math

    from kgemma.data import Reviews
    from kgemma.training.loss import training_loss
    from kgemma.training.trainer import fit
    from kgemma.training.trainer import make_optimizer

    texts = [r["text"] for r in review_rows[:36]]
    labels = np.array([r["label"] for r in review_rows[:36]])
    reviews = Reviews(texts, labels)
    config = TrainingConfig(
        epochs=2, batch_size=4, learning_rate=5e-3, cache_prefix=False, seed=3, checkpoint_every=1000
    )
    # Float blocks: Keras's `fit` trains the classifier's `call`, never int8 (where torch
    # would run kgemma's training in int8 by default).
    ours = make_classifier(seed=5, frozen_int8=False)
    _, progress = fit(ours, reviews, reviews, config, tmp_path / "run", verbose=0)
    # kgemma's fit restores its best epoch; Keras's runs up to that epoch.
    epochs = progress["best_epoch"] + 1
    theirs = make_classifier(seed=5, frozen_int8=False)
    total_steps = math.ceil(len(texts) / config.batch_size) * config.epochs
    theirs.compile(optimizer=make_optimizer(config, total_steps), loss=training_loss(theirs))
    theirs.fit(texts, labels, batch_size=config.batch_size, epochs=epochs, seed=config.seed, verbose=0)
    assert len(ours.trainable_weights) == len(theirs.trainable_weights) > 2
    assert np.abs(keras.ops.convert_to_numpy(theirs.output_dense.kernel)).max() > 1e-3  # It trained.
    # To float32 rounding: on an AVX2 CPU oneDNN's sums depend on the batch's shape, and
    # Keras pads every batch to 32 tokens where kgemma trims (1.5e-6 apart after 18 steps).
    for a, b in zip(ours.trainable_weights, theirs.trainable_weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a), atol=1e-5, err_msg=a.path
        )


def test_tensorboard_without_its_package_says_what_to_install(monkeypatch):
    from kgemma.training import TensorBoard

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # As if not installed.
    with pytest.raises(ImportError, match=r"pip install 'kgemma\[tensorboard\]'"):
        TensorBoard("logs")

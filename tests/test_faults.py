"""Faults a user met, each reproduced so it cannot come back (issue 17): no silent
wrong result, no traceback from a CLI, and every run recoverable."""

import json
import logging
import os
import stat
import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kgemma import GemmaSentimentClassifier
from kgemma.cli.evaluate import main as eval_main
from kgemma.cli.train import main as train_main
from kgemma.data import train_validation_split
from kgemma.data.reviews import Reviews
from kgemma.training.history import History
from tests.conftest import randomize_head
from tests.conftest import tiny_backbone
from tests.conftest import tiny_tokenizer
from tests.conftest import train_cli_args
from tests.conftest import write_jsonl

# Each runs a command-line tool or a subprocess end to end: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_classifier(tiny_preset):
    keras.utils.set_random_seed(0)
    return GemmaSentimentClassifier.from_preset(str(tiny_preset), sequence_length=32)


@pytest.fixture
def test_file(tmp_path, review_rows):
    return write_jsonl(tmp_path / "test.jsonl", review_rows[:24])


def eval_args(adapter, data, out, *extra):
    return [
        "--adapter",
        str(adapter),
        "--data",
        str(data),
        "--output",
        str(out),
        "--no-baseline",
        "--format",
        "json",
        *extra,
    ]


# --- Silent wrong results -----------------------------------------------------------


def test_eval_refuses_predictions_saved_by_another_model(tiny_classifier, test_file, tmp_path):
    first = randomize_head(tiny_classifier, seed=0).save_adapter(tmp_path / "a.npz")
    second = randomize_head(tiny_classifier, seed=1).save_adapter(tmp_path / "b.npz")
    out = tmp_path / "eval"
    assert CliRunner().invoke(eval_main, eval_args(first, test_file, out)).exit_code == 0
    saved = (out / "predictions.jsonl").read_text()
    other = CliRunner().invoke(eval_main, eval_args(second, test_file, out))
    assert other.exit_code == 1 and "holds predictions from another model (weights: saved" in other.output
    assert "Traceback" not in other.output and (out / "predictions.jsonl").read_text() == saved
    # Another setting that changes the scores is named too.
    half = CliRunner().invoke(eval_main, eval_args(first, test_file, out, "--dtype", "bfloat16"))
    assert half.exit_code == 1 and "(dtype: saved 'float32', now 'bfloat16')" in half.output
    # The same model resumes: its rows are reused.
    assert CliRunner().invoke(eval_main, eval_args(first, test_file, out)).exit_code == 0
    assert (out / "predictions.jsonl").read_text() == saved
    # A file without the record of its model is not trusted either.
    (out / "predictions.model.json").unlink()
    unnamed = CliRunner().invoke(eval_main, eval_args(first, test_file, out))
    assert unnamed.exit_code == 1 and "does not name" in unnamed.output


def test_eval_applies_the_saved_temperature(tiny_classifier, test_file, tmp_path):
    clf = randomize_head(tiny_classifier)
    clf.temperature = 2.5
    path = clf.save_adapter(tmp_path / "a.npz")
    out = tmp_path / "eval"
    assert CliRunner().invoke(eval_main, eval_args(path, test_file, out)).exit_code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    logits = np.array([json.loads(line)["logits"] for line in (out / "predictions.jsonl").read_text().splitlines()])
    labels = np.array([json.loads(line)["label"] for line in (out / "predictions.jsonl").read_text().splitlines()])
    scaled = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    assert metrics["calibration"]["temperature"] == 2.5
    assert metrics["overall"]["log_loss"] == pytest.approx(
        -np.log(scaled[np.arange(len(labels)), labels]).mean(), rel=1e-6
    )
    # And predict_proba, which applies the same temperature, agrees with the report's scaling.
    restored = GemmaSentimentClassifier.from_adapter(path)
    texts = [json.loads(line)["text"] for line in test_file.read_text().splitlines()]
    np.testing.assert_allclose(restored.predict_proba(texts), scaled, atol=1e-5)


def test_adapter_settings_that_change_outputs_must_match(tiny_classifier, tmp_path):
    clf = randomize_head(tiny_classifier)
    clf.temperature = 1.7
    path = clf.save_adapter(tmp_path / "a.npz")
    for setting, value in (("pooling", "last"), ("lora_alpha", 64.0), ("normalize_pooled", False)):
        with pytest.raises(ValueError, match=f"has {setting}=.* but this classifier has {setting}="):
            GemmaSentimentClassifier.from_adapter(path, **{setting: value})
    other = GemmaSentimentClassifier.from_preset(str(clf.base_preset), sequence_length=32, pooling="last")
    before = [w.numpy().copy() for w in other.trainable_weights]
    with pytest.raises(ValueError, match="has pooling='mean' but this classifier has pooling='last'"):
        other.load_adapter(path)
    assert all((a == w.numpy()).all() for a, w in zip(before, other.trainable_weights)), (
        "a refused adapter changed weights"
    )
    # The saved temperature comes back with the weights, unless asked otherwise.
    fresh = GemmaSentimentClassifier.from_preset(str(clf.base_preset), sequence_length=32)
    assert fresh.load_adapter(path).temperature == 1.7
    assert GemmaSentimentClassifier.from_adapter(path).temperature == 1.7
    assert GemmaSentimentClassifier.from_adapter(path, temperature=1.0).temperature == 1.0
    # Settings that do not touch the weights may differ.
    assert GemmaSentimentClassifier.from_adapter(path, sequence_length=64).preprocessor.sequence_length == 64


def test_non_finite_scores_are_an_error(tiny_classifier):
    kernel = tiny_classifier.backbone.transformer_layers[0].gating_ffw.kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    with pytest.raises(FloatingPointError, match="non-finite scores for 2 of 2 texts.*damaged"):
        randomize_head(tiny_classifier).predict_proba(["A fine film.", "Dull."])


# --- The converted-model cache ------------------------------------------------------


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, spm_proto):
    """A GGUF path whose 'conversion' builds a tiny backbone, counting conversions."""
    import kgemma.presets.embedded as embedded

    monkeypatch.setenv("KGEMMA_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def convert(path):
        calls.append(path)
        tokenizer = tiny_tokenizer("gemma3", spm_proto)
        return tiny_backbone("gemma3", tokenizer.vocabulary_size()), tokenizer, 32768

    monkeypatch.setattr(embedded, "convert_gguf", convert)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF tiny stand-in")
    return path, calls


@pytest.mark.parametrize("damage", ["bytes_flipped_inside", "truncated", "missing", "record_torn"])
def test_a_damaged_model_cache_is_detected_and_rebuilt(fake_gguf, damage, caplog):
    from kgemma.presets import gguf_preset_dir
    from kgemma.presets.embedded import cache_problem

    path, calls = fake_gguf
    preset = gguf_preset_dir(path)
    assert len(calls) == 1 and cache_problem(preset) is None
    assert gguf_preset_dir(path) == preset and len(calls) == 1, "a sound cache was converted again"
    weights = preset / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    if damage == "bytes_flipped_inside":
        middle = len(data) // 2
        data[middle : middle + 256] = bytes(b ^ 0xFF for b in data[middle : middle + 256])
        weights.write_bytes(bytes(data))
    elif damage == "truncated":
        weights.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "missing":
        weights.unlink()
    else:
        (preset / "kgemma_source.json").write_text('{"name": "tin')
    assert cache_problem(preset) is not None
    with caplog.at_level(logging.WARNING, logger="kgemma"):
        assert gguf_preset_dir(path) == preset
    assert len(calls) == 2 and "Converting tiny.gguf again" in caplog.text
    assert cache_problem(preset) is None
    GemmaSentimentClassifier.from_preset(str(preset), sequence_length=16)  # Loads again.


def test_a_damaged_preset_folder_names_itself(tiny_preset, tmp_path):
    import shutil

    copy = tmp_path / "preset"
    shutil.copytree(tiny_preset, copy)
    weights = copy / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ValueError, match=f"Could not load the model in {copy}: a file there is damaged"):
        GemmaSentimentClassifier.from_preset(str(copy))


def test_an_error_building_the_model_is_not_called_a_damaged_file(tiny_preset, monkeypatch):
    import keras_hub

    def fails_to_build(*args, **kwargs):
        raise RuntimeError("a collective op refused bfloat16")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", fails_to_build)
    with pytest.raises(RuntimeError, match="a collective op refused bfloat16"):
        GemmaSentimentClassifier.from_preset(str(tiny_preset))


# --- Runs that stop --------------------------------------------------------------


def train_args(preset, data, out, *extra):
    return train_cli_args(preset, data, out, "--epochs", "1", "--max-examples", "40", "--no-save-keras", *extra)


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed(tiny_preset, review_rows, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", review_rows)
    out = tmp_path / "run"
    assert CliRunner().invoke(train_main, train_args(tiny_preset, data, out)).exit_code == 0
    # What a kill before the first checkpoint leaves: the settings, nothing else.
    for path in out.iterdir():
        if path.name != "run.json":
            path.unlink()
    again = CliRunner().invoke(train_main, train_args(tiny_preset, data, out))
    assert again.exit_code == 1 and "pass --resume" in again.output and "start it again" in again.output
    resumed = CliRunner().invoke(train_main, train_args(tiny_preset, data, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "starting it again from the beginning" in resumed.output
    assert (out / "adapter.npz").is_file() and (out / "checkpoint.npz").is_file()


@pytest.mark.parametrize("killed_at", [5, 10])  # Mid-epoch; at the end of the first epoch.
def test_a_run_killed_between_history_and_checkpoint_resumes_with_a_whole_history(
    tiny_preset, review_rows, tmp_path, monkeypatch, killed_at
):
    import kgemma.training.trainer as trainer

    data = write_jsonl(tmp_path / "train.jsonl", review_rows)
    out = tmp_path / "run"
    args = train_args(tiny_preset, data, out, "--epochs", "2", "--checkpoint-every", "1")
    writes, save_state, save_history = [], trainer.save_state, History.save

    def killable(write):
        def wrapped(*a, **k):
            writes.append(write)
            # Each checkpoint writes history and state; die before the second write of one
            # (9 steps an epoch: checkpoint 10 is the first epoch's end).
            if len(writes) == 2 * killed_at:
                raise KeyboardInterrupt("killed")
            return write(*a, **k)

        return wrapped

    monkeypatch.setattr(trainer, "save_state", killable(save_state))
    monkeypatch.setattr(History, "save", killable(save_history))
    assert CliRunner().invoke(train_main, args).exit_code != 0
    monkeypatch.undo()
    resumed = CliRunner().invoke(train_main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    history = json.loads((out / "history.json").read_text())
    assert [s["global_step"] for s in history["steps"]] == list(range(1, 19))
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]


def test_outputs_are_written_atomically_with_ordinary_modes(tiny_preset, review_rows, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", review_rows)
    out = tmp_path / "run"
    assert CliRunner().invoke(train_main, train_args(tiny_preset, data, out)).exit_code == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "scratch files were left behind"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes["adapter.npz"] == modes["checkpoint.npz"] == modes["history.json"] == 0o666 & ~umask, modes
    # A torn history is an error that names the file, not a bare JSON message.
    (out / "history.json").write_text('{"steps": [{"glo')
    with pytest.raises(ValueError, match="history.json is damaged"):
        History.load(out)
    resumed = CliRunner().invoke(train_main, train_args(tiny_preset, data, out, "--resume"))
    assert resumed.exit_code == 1 and "history.json is damaged" in resumed.output and "Traceback" not in resumed.output


# --- Smaller ones ----------------------------------------------------------------


@pytest.mark.parametrize(
    "texts,message",
    [
        (b"A fine film.", "texts is bytes, not a string: decode it first"),
        (["Fine.", b"Dull."], r"texts\[1\] is bytes, not a string: decode it first"),
        ({"a": "Fine.", "b": "Dull."}, "texts is a dict"),
    ],
)
def test_bytes_and_dicts_are_refused_by_name(make_classifier, texts, message):
    with pytest.raises(TypeError, match=message):
        make_classifier().predict_proba(texts)


def test_a_random_bytes_adapter_gets_no_pickle_advice(tmp_path):
    path = tmp_path / "a.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ValueError, match="not a readable kgemma adapter: damaged") as error:
        GemmaSentimentClassifier.from_adapter(path)
    assert "pickle" not in str(error.value)


def test_too_small_and_one_class_data_get_our_words():
    def reviews(labels):
        n = len(labels)
        return Reviews(
            [f"text {i}" for i in range(n)], np.array(labels), [str(i) for i in range(n)], [0] * n, source="x"
        )

    with pytest.raises(
        ValueError, match=r"validation split needs at least 20 reviews, at least 2 of each class; got 6 \(0: 3, 1: 3\)"
    ):
        train_validation_split(reviews([0, 1] * 3))
    with pytest.raises(ValueError, match=r"at least 2 of each class; got 30 \(0: 29, 1: 1\)"):
        train_validation_split(reviews([0] * 29 + [1]))


def test_one_class_training_data_warns(tiny_preset, review_rows, tmp_path):
    from kgemma.training import TrainingConfig
    from kgemma.training import load_training_data

    data = write_jsonl(tmp_path / "train.jsonl", [r for r in review_rows if r["label"] == 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_training_data(str(data), TrainingConfig())
    assert any("Every training review has the same label" in str(w.message) for w in caught)

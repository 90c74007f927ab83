import json

import numpy as np
import pytest
from click.testing import CliRunner

from kgemma.cli.train import main as train_main
from kgemma.training import prefix_cache
from kgemma.training.prefix_cache import PrefixStates
from kgemma.training.prefix_cache import cache_key
from tests.test_training import adapter_arrays
from tests.test_training import cli_args

# Each runs a command-line tool or a subprocess end to end: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


COMMON = [
    "--epochs",
    "1",
    "--max-examples",
    "60",
    "--lora-layers",
    "1",
    "--no-save-keras",
    "--no-jit-compile",
    "--dropout",
    "0",
    "--lora-dropout",
    "0",
]


def train(preset, data, output, *extra):
    result = CliRunner().invoke(train_main, cli_args(preset, data, output, *COMMON, *extra))
    assert result.exit_code == 0, result.output
    return json.loads((output / "history.json").read_text())["steps"]


def test_prefix_states_index_reviews_in_one_flat_array():
    flat = np.arange(12, dtype="float32").reshape(6, 2)
    states = PrefixStates(flat, [1, 3, 2], seconds=2.5)
    assert len(states) == 3 and states.seconds == 2.5
    np.testing.assert_array_equal(states[1], flat[1:4])
    np.testing.assert_array_equal(states[2], flat[4:])


def test_cache_key_follows_depth_int8_and_token_ids(make_classifier):
    clf = make_classifier(lora_layers=1)
    features = {k: np.asarray(v) for k, v in clf.preprocessor(["A fine film.", "Dull."]).items()}
    key = cache_key(clf, features, 1, True)
    assert key == cache_key(clf, {k: v.copy() for k, v in features.items()}, 1, True)
    assert key != cache_key(clf, features, 0, True)
    assert key != cache_key(clf, features, 1, False)
    assert key != cache_key(clf, features, 1, True, int8=True)
    other = dict(features, token_ids=features["token_ids"][::-1])
    assert key != cache_key(clf, other, 1, True)


def test_a_second_run_maps_the_cached_prefix_and_trains_the_same(tiny_preset, data_file, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    plain = train(tiny_preset, data_file, tmp_path / "plain")
    first = train(tiny_preset, data_file, tmp_path / "first", "--prefix-cache", str(cache))
    entries = sorted(cache.iterdir())
    assert len(entries) == 2  # The training rows' states and the validation rows'; nothing partial.
    for entry in entries:
        record = json.loads((entry / "prefix.json").read_text())
        assert record["depth"] == 1 and record["seconds"] > 0
        assert np.load(entry / "states.npy", mmap_mode="r").shape == (sum(record["lengths"]), 16)

    def must_not_compute(*args, **kwargs):
        raise AssertionError("the cached prefix was computed again")

    with monkeypatch.context() as patch:
        patch.setattr(prefix_cache, "save_entry", must_not_compute)
        second = train(tiny_preset, data_file, tmp_path / "second", "--prefix-cache", str(cache))
    for run in (first, second):
        np.testing.assert_allclose([s["loss"] for s in run], [s["loss"] for s in plain], atol=1e-6)
    expected, got = (
        adapter_arrays(tmp_path / "plain" / "adapter.npz"),
        adapter_arrays(tmp_path / "second" / "adapter.npz"),
    )
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6, err_msg=name)
    # The second run's time still counts the prefix pass the entry took to make.
    made = sum(json.loads((e / "prefix.json").read_text())["seconds"] for e in entries)
    assert json.loads((tmp_path / "second" / "summary.json").read_text())["train_seconds"] >= made

    # A damaged entry is said, ignored and made again.
    states_file = entries[0] / "states.npy"
    states_file.write_bytes(states_file.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        third = train(tiny_preset, data_file, tmp_path / "third", "--prefix-cache", str(cache))
    assert "Ignoring the prefix cache entry" in caplog.text
    np.testing.assert_allclose([s["loss"] for s in third], [s["loss"] for s in plain], atol=1e-6)
    assert np.load(states_file, mmap_mode="r").shape[1] == 16

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kgemma.scaling import KNOWN_CONFIGS
from kgemma.scaling import create_distribution
from kgemma.scaling import estimate_memory
from kgemma.scaling import gemma_layout_map
from kgemma.scaling import parameter_counts
from tests.conftest import tiny_backbone

# Each runs a command-line tool or a subprocess end to end: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


SCRIPT = Path(__file__).with_name("distributed_steps.py")


def distributed_run(backend, strategy, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax", reason="the JAX backend is not installed (pip install -e '.[test]')")
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = tmp_path / f"{backend}_{strategy}.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), strategy, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def assert_same_run(result):
    single, distributed = result["single"], result["distributed"]
    assert np.abs(np.asarray(single["logits"])).max() > 1e-3
    np.testing.assert_allclose(distributed["logits"], single["logits"], atol=1e-5)
    np.testing.assert_allclose(distributed["losses"], single["losses"], atol=1e-5)
    assert single["losses"][1] != single["losses"][0], "the first step changed nothing"
    for got, expected in zip(distributed["weights"], single["weights"]):
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_data_parallel_step_on_two_devices_matches_one_device(backend, tmp_path):
    result = distributed_run(backend, "data", tmp_path)
    assert result["plan"]["replicas"] == 2
    assert_same_run(result)


def test_a_model_parallel_classifier_on_two_devices_matches_one_device(tmp_path):
    result = distributed_run("jax", "model", tmp_path)
    assert result["plan"]["mesh_shape"] == [1, 2]
    # The query kernel (2 heads) is split over the model axis, not copied.
    assert "'model'" in result["query_kernel_layout"], result["query_kernel_layout"]
    assert_same_run(result)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="checks the TensorFlow backend's refusal: make test runs this on TensorFlow",
)
def test_model_parallel_on_tensorflow_names_the_backend_it_needs():
    with pytest.raises(ValueError, match="needs the JAX backend"):
        create_distribution("model")
    with pytest.raises(ValueError, match="distribution must be one of"):
        create_distribution("pipeline")
    with pytest.raises(ValueError, match="Asked for 64 devices"):
        create_distribution("data", devices=64)


def test_distribution_on_torch_names_the_backends_it_needs(monkeypatch):
    # Keras's torch backend has no distribution kgemma can use; the CLIs say so before training.
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    for strategy in ("data", "model"):
        with pytest.raises(ValueError, match="need the JAX or TensorFlow backend; this is torch"):
            create_distribution(strategy)
    assert create_distribution("none").replicas == 1


def test_layout_map_leaves_whole_the_dimensions_a_mesh_axis_cannot_split():
    mesh = keras.distribution.DeviceMesh(shape=(1, 2), axis_names=("batch", "model"), devices=["cpu:0", "cpu:1"])
    layout = gemma_layout_map(mesh, KNOWN_CONFIGS["gemma3_270m"])
    assert tuple(layout["decoder_block_3/attention/query/kernel"].axes) == ("model", "batch", None)
    # One key/value head cannot be split over two devices.
    assert tuple(layout["decoder_block_3/attention/key/kernel"].axes) == (None, "batch", None)
    assert tuple(layout["token_embedding/embeddings"].axes) == ("model", "batch")


@pytest.mark.parametrize("kind,family", [("gemma", 1), ("gemma3", 3)])
def test_parameter_counts_match_real_backbones(kind, family):
    backbone = tiny_backbone(kind, vocabulary_size=400)
    config = {**backbone.get_config(), "family": family}
    counts = parameter_counts(config)
    assert counts["embedding"] + counts["blocks"] == backbone.count_params()


def test_parameter_counts_match_keras_hub_preset_sizes():
    # The sizes keras-hub lists for these presets.
    expected = {"gemma3_270m": 268_098_176, "gemma_2b_en": 2_506_172_416, "gemma2_2b_en": 2_614_341_888}
    for name, size in expected.items():
        counts = parameter_counts(KNOWN_CONFIGS[name])
        assert counts["embedding"] + counts["blocks"] == size, name
    assert parameter_counts(KNOWN_CONFIGS["gemma3_270m"])["trainable"] == 371_202


def test_memory_estimate_scales_with_the_mesh():
    config = KNOWN_CONFIGS["gemma_2b_en"]
    one = estimate_memory(config, batch_size=8, sequence_length=512, weight_bytes=2)
    dp = estimate_memory(config, batch_size=8, sequence_length=512, weight_bytes=2, data_parallel=8)
    mp = estimate_memory(config, batch_size=8, sequence_length=512, weight_bytes=2, model_parallel=8)
    assert one.weights == dp.weights == 8 * mp.weights
    assert dp.activations * 8 == one.activations and mp.activations < one.activations
    top = estimate_memory(config, batch_size=8, sequence_length=512, weight_bytes=2, lora_layers=2)
    assert top.activations * 9 == one.activations and top.trainable_state < one.trainable_state

import keras
import numpy as np
import pytest

from tests.conftest import randomize_head
from tests.conftest import serve_in_plain_tensorflow
from tests.conftest import tiny_classifier

REVIEWS = ["A wonderful, moving film.", "Two hours I will never get back.", "Loved the music."]


def trained(clf):
    """Move LoRA and head weights off their initial values."""
    rng = np.random.default_rng(7)
    for w in clf.trainable_weights:
        w.assign(rng.normal(scale=0.3, size=w.shape))
    return clf


@pytest.fixture(scope="module")
def trained_adapter(spm_proto, tmp_path_factory):
    """A trained tiny Gemma 3 classifier and its adapter file, shared by the tests that
    only read them (each classifier costs a test about a second to build and trace)."""
    clf = trained(tiny_classifier(spm_proto))
    return clf, clf.save_adapter(tmp_path_factory.mktemp("trained") / "adapter.npz")


def test_keras_file_round_trip_gives_identical_predictions(make_classifier, kind, tmp_path):
    clf = trained(make_classifier(kind, pooling="last", lora_targets="attention"))
    path = tmp_path / "model.keras"
    clf.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored).__name__ == "GemmaSentimentClassifier"
    assert restored.pooling == "last" and restored.lora_targets == "attention"
    np.testing.assert_allclose(restored.predict_proba(REVIEWS), clf.predict_proba(REVIEWS), atol=1e-6)
    assert len(restored.trainable_weights) == len(clf.trainable_weights)


def test_adapter_round_trip(make_classifier, kind, tmp_path):
    clf = trained(make_classifier(kind))
    path = clf.save_adapter(tmp_path / "adapter.npz")
    fresh = make_classifier(kind)  # same base weights, untrained LoRA and head
    assert not np.allclose(fresh.predict_proba(REVIEWS), clf.predict_proba(REVIEWS))
    fresh.load_adapter(path)
    np.testing.assert_allclose(fresh.predict_proba(REVIEWS), clf.predict_proba(REVIEWS), atol=1e-6)


def test_adapter_holds_only_lora_and_head(trained_adapter):
    clf, path = trained_adapter
    stored = np.load(path)
    n_values = sum(stored[k].size for k in stored.files if not k.startswith("__"))
    assert n_values == sum(int(np.prod(w.shape)) for w in clf.trainable_weights)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(lora_rank=4), "lora_rank=8 but this classifier has lora_rank=4"),
        (dict(lora_targets="all"), "lora_targets"),
        (dict(lora_layers=1), "lora_layers=None but this classifier has lora_layers=1"),
        (dict(seed=5), "different base model"),
    ],
)
def test_adapter_refuses_an_incompatible_classifier(make_classifier, trained_adapter, change, message):
    _, path = trained_adapter
    other = make_classifier(**change)
    before = [w.numpy().copy() for w in other.weights]
    with pytest.raises(ValueError, match=message):
        other.load_adapter(path)
    # A refused load changes nothing.
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, other.weights))


def test_adapter_refuses_another_backbone_class(make_classifier, tmp_path):
    path = make_classifier("gemma").save_adapter(tmp_path / "adapter.npz")
    with pytest.raises(ValueError, match="trained on a GemmaBackbone"):
        make_classifier("gemma3").load_adapter(path)


def test_bad_adapter_files_get_clear_errors(trained_adapter, tmp_path):
    clf, _ = trained_adapter
    with pytest.raises(FileNotFoundError, match="Adapter file not found"):
        clf.load_adapter(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="damaged, truncated or not an .npz file"):
        clf.load_adapter(corrupt)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a kgemma adapter"):
        clf.load_adapter(foreign)
    with pytest.raises(ValueError, match="end in .npz"):
        clf.save_adapter(tmp_path / "adapter.bin")


def test_failed_adapter_save_keeps_the_previous_file(make_classifier, tmp_path, monkeypatch):
    clf = make_classifier()
    path = clf.save_adapter(tmp_path / "adapter.npz")
    original = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        trained(clf).save_adapter(path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.npz"]


def test_a_bfloat16_copy_of_the_base_model_takes_the_same_adapters(trained_adapter):
    import keras_hub

    from kgemma.model.backbones import backbone_fingerprint

    clf, path = trained_adapter
    config = {**clf.backbone.get_config(), "dtype": "bfloat16"}
    half = keras_hub.models.Gemma3Backbone.from_config(config)
    half.set_weights(clf.backbone.get_weights())
    assert backbone_fingerprint(half) == backbone_fingerprint(clf.backbone)
    other = type(clf)(backbone=half, preprocessor=clf.preprocessor).load_adapter(path)
    texts = ["A fine film.", "Dull and far too long."]
    np.testing.assert_allclose(other.predict_proba(texts), clf.predict_proba(texts), atol=0.05)


def test_from_adapter_rebuilds_the_dtype_it_was_trained_in(tiny_preset, tmp_path):
    from kgemma import GemmaSentimentClassifier

    half = GemmaSentimentClassifier.from_preset(str(tiny_preset), dtype="bfloat16", sequence_length=32)
    path = trained(half).save_adapter(tmp_path / "adapter.npz")
    assert GemmaSentimentClassifier.from_adapter(path).backbone.dtype_policy.name == "bfloat16"
    assert GemmaSentimentClassifier.from_adapter(path, dtype="float32").backbone.dtype_policy.name == "float32"


def test_the_settings_get_config_saves_are_the_ones_an_adapter_rebuilds(tiny_preset, tmp_path):
    from kgemma import GemmaSentimentClassifier

    clf = trained(GemmaSentimentClassifier.from_preset(str(tiny_preset), sequence_length=32, activation="softmax"))
    assert clf.get_config()["activation"] == clf.rebuild_config()["activation"] == "softmax"
    again = GemmaSentimentClassifier.from_adapter(clf.save_adapter(tmp_path / "adapter.npz"))
    assert again.activation is keras.activations.softmax
    outputs = again.predict(["A fine film.", "Dull and far too long."], verbose=0)
    np.testing.assert_allclose(np.sum(outputs, axis=-1), 1.0, atol=1e-5)


def test_the_first_blocks_of_a_backbone_run_as_they_did_in_the_whole_one(tiny_preset, tmp_path):
    from kgemma import GemmaSentimentClassifier
    from kgemma.model.frozen_prefix import FrozenPrefix

    whole = GemmaSentimentClassifier.from_preset(str(tiny_preset), sequence_length=32)
    first = GemmaSentimentClassifier.from_preset(str(tiny_preset), sequence_length=32, backbone_layers=1, lora_layers=1)
    assert (whole.backbone.num_layers, first.backbone.num_layers) == (2, 1)
    batch = first.preprocessor(["A fine film, and a moving one.", "Dull."])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(FrozenPrefix(first.backbone, 1)(batch)),
        keras.ops.convert_to_numpy(FrozenPrefix(whole.backbone, 1)(batch)),
        atol=1e-6,
    )
    # An adapter trained on the first block rebuilds on the first block alone.
    path = trained(first).save_adapter(tmp_path / "adapter.npz")
    again = GemmaSentimentClassifier.from_adapter(path)
    assert again.backbone.num_layers == 1
    texts = ["A fine film.", "Dull and far too long."]
    np.testing.assert_allclose(again.predict_proba(texts), first.predict_proba(texts), atol=1e-6)
    with pytest.raises(ValueError, match="backbone_layers must be from 1 to 2"):
        GemmaSentimentClassifier.from_preset(str(tiny_preset), backbone_layers=3)


def test_save_to_preset_round_trips_a_fine_tuned_classifier(tiny_preset, tmp_path):
    from kgemma import GemmaSentimentClassifier

    clf = trained(
        GemmaSentimentClassifier.from_preset(str(tiny_preset), sequence_length=32, pooling="last", lora_rank=4)
    )
    clf.temperature = 1.5
    clf.save_to_preset(str(tmp_path / "preset"))
    assert {"task.json", "task.weights.h5", "config.json", "preprocessor.json"} <= {
        p.name for p in (tmp_path / "preset").iterdir()
    }
    again = GemmaSentimentClassifier.from_preset(str(tmp_path / "preset"))
    assert (again.pooling, again.lora_rank, again.temperature, again.preprocessor.sequence_length) == (
        "last",
        4,
        1.5,
        32,
    )
    assert again.base_preset == clf.base_preset
    texts = ["A fine film.", "Dull and far too long.", "Not bad at all."]
    np.testing.assert_array_equal(again.predict_proba(texts), clf.predict_proba(texts))
    with pytest.raises(ValueError, match="sequence_length cannot change on loading"):
        GemmaSentimentClassifier.from_preset(str(tmp_path / "preset"), sequence_length=64)


def test_presets_lists_what_from_preset_loads():
    from kgemma import GemmaSentimentClassifier

    presets = GemmaSentimentClassifier.presets
    assert list(presets)[0] == "gemma3_270m_gguf"
    assert {"gemma_2b_en", "gemma3_1b", "gemma3_270m"} <= set(presets)
    assert not any(name.startswith("bert") for name in presets)


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="a raw-text SavedModel is written from the TensorFlow backend: make test runs this on TensorFlow",
)
def test_an_exported_saved_model_serves_raw_text_as_predict_proba_does(make_classifier, tmp_path):
    clf = randomize_head(make_classifier(kind="gemma3"))
    clf.temperature = 1.7
    texts = ["A wonderful film.", "Dull <br /> and long, far too long. " * 6, "Not bad at all."]
    clf.export(tmp_path / "served", verbose=False)
    # A batch with a review longer than the sequence, and a short one (trimmed to 16 tokens).
    served, short = serve_in_plain_tensorflow(tmp_path / "served", texts, texts[:1])
    np.testing.assert_allclose(served, clf.predict_proba(texts), atol=1e-4)
    np.testing.assert_allclose(short, clf.predict_proba(texts[:1]), atol=1e-6)
    # Each weight is stored once (Keras's own export stores every one twice).
    import tensorflow as tf

    shapes = tf.train.load_checkpoint(str(tmp_path / "served" / "variables" / "variables")).get_variable_to_shape_map()
    embedding = list(clf.backbone.token_embedding.embeddings.shape)
    assert [shape for shape in shapes.values() if shape == embedding] == [embedding]

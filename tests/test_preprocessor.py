import numpy as np
import pytest
import tensorflow as tf

from kgemma import GemmaSentimentClassifierPreprocessor
from kgemma.model.text import clean_review_text
from kgemma.model.truncation import truncate_tokens
from tests.conftest import tiny_tokenizer


@pytest.fixture
def preprocessor(spm_proto):
    def make(**kwargs):
        return GemmaSentimentClassifierPreprocessor(tiny_tokenizer("gemma3", spm_proto), **kwargs)

    return make


def test_html_is_cleaned():
    raw = tf.constant(["Great.<br /><br />Loved it &amp; <i>more</i>.<BR>End &quot;ok&quot;  x"])
    assert clean_review_text(raw).numpy()[0].decode() == 'Great. Loved it & more. End "ok" x'


@pytest.mark.parametrize(
    "truncation,expected",
    [
        ("head", [[0, 1, 2, 3], [0, 1]]),
        ("tail", [[6, 7, 8, 9], [0, 1]]),
        ("head_tail", [[0, 7, 8, 9], [0, 1]]),
    ],
)
def test_truncation_keeps_head_tail_or_both(truncation, expected):
    tokens = tf.ragged.constant([list(range(10)), [0, 1]])
    assert truncate_tokens(tokens, 4, truncation).to_list() == expected


def test_truncation_of_random_batches_keeps_what_each_strategy_promises():
    rng = np.random.default_rng(0)
    for _ in range(30):
        rows = [rng.integers(0, 100, size=rng.integers(0, 12)).tolist() for _ in range(rng.integers(0, 6))]
        budget = int(rng.integers(1, 9))
        tokens = tf.RaggedTensor.from_row_lengths(
            tf.constant(sum(rows, []), tf.int32), tf.constant([len(r) for r in rows], tf.int64)
        )
        for truncation, head in (("head", budget), ("tail", 0), ("head_tail", budget // 4)):
            tail = budget - head
            expected = [r if len(r) <= budget else r[:head] + r[len(r) - tail :] for r in rows]
            assert truncate_tokens(tokens, budget, truncation).to_list() == expected, (rows, budget, truncation)


def test_output_has_bos_padding_and_mask(preprocessor):
    p = preprocessor(sequence_length=12)
    out = p(["A wonderful film.", "Dull."])
    ids, mask = np.asarray(out["token_ids"]), np.asarray(out["padding_mask"])
    assert ids.shape == (2, 12) and mask.shape == (2, 12)
    assert (ids[:, 0] == p.tokenizer.start_token_id).all()
    np.testing.assert_array_equal(ids[~mask], p.tokenizer.pad_token_id)
    expected_len = 1 + len(p.tokenizer("Dull."))
    assert mask[1].sum() == expected_len


def test_long_review_is_truncated_to_the_sequence_length(preprocessor):
    p = preprocessor(sequence_length=8, truncation="tail")
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = np.asarray(p([text])["token_ids"])[0]
    full = list(np.asarray(p.tokenizer(text)))
    assert list(ids) == [p.tokenizer.start_token_id] + full[-7:]


def test_labels_by_name_or_id(preprocessor):
    p = preprocessor()
    _, y = p(["a", "b"], ["positive", "negative"])
    np.testing.assert_array_equal(y, [1, 0])
    _, y = p(["a", "b"], [1, 0])
    np.testing.assert_array_equal(y, [1, 0])


@pytest.mark.parametrize("bad", [["maybe"], [2], [-1]])
def test_wrong_labels_are_refused(preprocessor, bad):
    with pytest.raises(tf.errors.InvalidArgumentError, match="[Ll]abel"):
        preprocessor()(["a"], bad)


def test_works_inside_tf_data(preprocessor):
    p = preprocessor(sequence_length=10)
    ds = tf.data.Dataset.from_tensor_slices((["a good film", "bad"], [1, 0])).map(p).batch(2)
    x, y = next(iter(ds))
    assert x["token_ids"].shape == (2, 10)
    np.testing.assert_array_equal(y, [1, 0])


def test_bad_settings_are_refused(preprocessor):
    with pytest.raises(ValueError, match="truncation must be one of"):
        preprocessor(truncation="middle")
    with pytest.raises(ValueError, match="sequence_length must be an integer >= 2"):
        preprocessor(sequence_length=1)
    with pytest.raises(ValueError, match="label_names"):
        preprocessor(label_names=["only"])


def test_survives_keras_set_random_seed(preprocessor):
    import keras

    p = preprocessor(sequence_length=8)
    first = np.asarray(p(["A wonderful film."])["token_ids"])
    keras.utils.set_random_seed(3)  # drops TensorFlow Text's SentencePiece resource
    np.testing.assert_array_equal(np.asarray(p(["A wonderful film."])["token_ids"]), first)

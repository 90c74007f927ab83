"""Text -> token ids and padding mask for `GemmaSentimentClassifier`."""

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import preprocessing_function

from kgemma.data.reviews import LABEL_NAMES
from kgemma.model.text import clean_review_text
from kgemma.model.truncation import TRUNCATIONS
from kgemma.model.truncation import truncate_tokens


@keras.saving.register_keras_serializable(package="kgemma")
class GemmaSentimentClassifierPreprocessor(keras_hub.models.TextClassifierPreprocessor):
    """Tokenizes reviews for `GemmaSentimentClassifier`.

    For each review it (1) cleans IMDB's HTML (`<br />`, tags, entities), (2) tokenizes
    with a Gemma tokenizer, (3) truncates to the token budget keeping the head, the
    tail or both, and (4) adds the `<bos>` token and right-pads to `sequence_length`,
    returning `{"token_ids", "padding_mask"}`. Labels may be integer ids or label names.

    It runs in TensorFlow, so it can be mapped over a `tf.data.Dataset`.

    Args:
        tokenizer: a `keras_hub.models.GemmaTokenizer` or `Gemma3Tokenizer`.
        sequence_length: int, the padded length including `<bos>`. Defaults to 256.
        truncation: `"head"` keeps the opening of a long review, `"tail"` its end,
            `"head_tail"` a quarter of the budget from the opening and the rest from
            the end (where reviews tend to give their verdict). Defaults to `"head"`.
        clean_html: bool, whether to clean HTML before tokenizing. Defaults to True.
        label_names: names of the classes in id order. Defaults to
            `("negative", "positive")`.

    Example:
    ```python
    preprocessor = GemmaSentimentClassifierPreprocessor.from_preset(sequence_length=64)
    x = preprocessor(["Great film.<br /><br />Loved it.", "Dull."])
    x, y = preprocessor(["Great film.", "Dull."], ["positive", "negative"])
    ```
    """

    def __init__(
        self,
        tokenizer,
        sequence_length=256,
        truncation="head",
        clean_html=True,
        label_names=LABEL_NAMES,
        **kwargs,
    ):
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}.")
        if not isinstance(sequence_length, int) or sequence_length < 2:
            raise ValueError(f"sequence_length must be an integer >= 2, got {sequence_length!r}.")
        label_names = tuple(label_names)
        if len(label_names) < 2 or len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be two or more distinct names, got {label_names}.")
        kwargs.pop("truncate", None)
        super().__init__(tokenizer=tokenizer, sequence_length=sequence_length, **kwargs)
        self.truncation = truncation
        self.clean_html = clean_html
        self.label_names = label_names

    def build(self, input_shape):
        self.packer = keras_hub.layers.StartEndPacker(
            start_value=self.tokenizer.start_token_id,
            pad_value=self.tokenizer.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        self._pack_texts = self._traced_pack()
        self.built = True

    def _traced_pack(self):
        """`_pack_batch` as one `tf.function` for any batch of texts: keras-hub runs eager
        calls through a pure-Python path, and one traced TF path serves eager calls and
        tf.data alike. Traced once, for a batch of any size (left to `reduce_retracing`, a
        second batch size would trace the graph again)."""
        return tf.function(self._pack_batch, input_signature=[tf.TensorSpec([None], tf.string)])

    def _pack(self, x):
        if tf.executing_eagerly():
            self._revive_tokenizer()
        return self._pack_texts(x)

    def _revive_tokenizer(self):
        """Rebuild TensorFlow Text's SentencePiece resource if it is gone, before tracing
        with it: `tf.random.set_seed` (called by `keras.utils.set_random_seed`) drops it, and
        a graph traced over a dropped resource fails when it runs. The check is one op on
        the resource: keras-hub's eager `tokenize` runs the `sentencepiece` package instead,
        so only its TensorFlow Text tokenizer (what the graph calls) can tell."""
        try:
            self.tokenizer._sentence_piece.vocab_size()
        except tf.errors.NotFoundError:
            self.tokenizer.set_proto(self.tokenizer.proto)
            self._pack_texts = self._traced_pack()

    def _pack_batch(self, x):
        if self.clean_html:
            x = clean_review_text(x)
        tokens = self.tokenizer(x)
        tokens = truncate_tokens(tokens, self.sequence_length - 1, self.truncation)
        return self.packer(tokens, add_end_value=False)

    def labels_to_ids(self, y):
        """Map label names to ids, and check that integer ids are in range."""
        y = tf.convert_to_tensor(y)
        if y.dtype == tf.string:
            names = tf.constant(self.label_names)
            matches = tf.cast(tf.equal(tf.expand_dims(y, -1), names), tf.int32)
            tf.debugging.assert_equal(
                tf.reduce_sum(matches, -1),
                1,
                message=f"Unknown label name; expected one of {self.label_names}",
            )
            return tf.argmax(matches, axis=-1, output_type=tf.int32)
        y = tf.cast(y, tf.int32)
        tf.debugging.assert_non_negative(y, message="Label ids must be >= 0")
        tf.debugging.assert_less(y, len(self.label_names), message=f"Label ids must be < {len(self.label_names)}")
        return y

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        x = tf.convert_to_tensor(x)
        unbatched = x.shape.rank == 0
        if unbatched:
            x = tf.expand_dims(x, 0)
        token_ids, padding_mask = self._pack(x)
        if unbatched:
            token_ids, padding_mask = token_ids[0], padding_mask[0]
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        if y is not None:
            y = self.labels_to_ids(y)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def token_counts(self, texts):
        """Tokens in each text after clean-up and before truncation (no `<bos>`)."""
        x = tf.constant(list(texts))
        if self.clean_html:
            x = clean_review_text(x)
        return [len(t) for t in self.tokenizer(x)]

    @classmethod
    def from_preset(cls, preset=None, **kwargs):
        """Build the preprocessor around a preset's tokenizer.

        Args:
            preset: `None` for the embedded Gemma 3 270M, or any preset that
                `GemmaSentimentClassifier.from_preset` takes.
            **kwargs: constructor arguments (`sequence_length`, `truncation`, ...).
        """
        from kgemma.presets import resolve_preset

        tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(resolve_preset(preset))
        return cls(tokenizer=tokenizer, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("truncate", None)
        config.update(
            {
                "truncation": self.truncation,
                "clean_html": self.clean_html,
                "label_names": list(self.label_names),
            }
        )
        return config


def tokenize(preprocessor, texts, chunk=512):
    """Token ids and padding masks for all `texts`, as numpy arrays, preprocessed
    `chunk` texts at a time (so memory stays flat on a long list)."""
    ids, masks = [], []
    for start in range(0, len(texts), chunk):
        x = preprocessor(texts[start : start + chunk])
        ids.append(np.asarray(x["token_ids"]))
        masks.append(np.asarray(x["padding_mask"]))
    return {"token_ids": np.concatenate(ids), "padding_mask": np.concatenate(masks)}

"""Review text clean-up (in TensorFlow, so it runs inside `tf.data`) and input checks."""

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from kgemma.data.text import BREAK
from kgemma.data.text import ENTITIES
from kgemma.data.text import SPACE
from kgemma.data.text import TAG


def clean_review_text(texts):
    """`kgemma.data.text.clean_text` on string tensors of any shape, in TensorFlow
    so that it runs inside `tf.data`."""
    texts = tf.strings.regex_replace(texts, BREAK, " ")
    texts = tf.strings.regex_replace(texts, TAG, "")
    for entity, char in ENTITIES.items():
        texts = tf.strings.regex_replace(texts, entity, char, replace_global=True)
    texts = tf.strings.regex_replace(texts, SPACE, " ")
    return tf.strings.strip(texts)


def check_texts(texts):
    """Validate plain-Python text input; return it as a list of strings.

    Raises a `TypeError` or `ValueError` that names the offending position.
    """
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts is bytes, not a string: decode it first, e.g. texts.decode('utf-8').")
    if isinstance(texts, Mapping):
        # Iterating a dict would score its keys.
        raise TypeError("texts is a dict: pass a list of strings (e.g. list(d.values())).")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}.")
    if not texts:
        raise ValueError("No texts given: pass at least one review.")
    for i, text in enumerate(texts):
        if isinstance(text, (bytes, bytearray)):
            raise TypeError(f"texts[{i}] is bytes, not a string: decode it first, e.g. text.decode('utf-8').")
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not a string.")
    return texts


def check_not_empty(texts, token_counts):
    """Refuse texts that are blank or have no tokens left after HTML clean-up."""
    empty = [i for i, (text, count) in enumerate(zip(texts, token_counts)) if count == 0 or not text.strip()]
    if len(empty) == len(texts):
        raise ValueError("Every text in the batch is empty (after HTML clean-up).")
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise ValueError(f"Empty text at position(s) {shown} (after HTML clean-up).")


def check_finite(logits):
    """Refuse non-finite model outputs: a number that looks like a probability but
    comes from NaN would be silently wrong."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(logits)).all(axis=-1))
    if len(bad):
        raise FloatingPointError(
            f"The model produced non-finite scores for {len(bad)} of {len(logits)} texts (first at position {bad[0]}). "
            "Its weights are likely damaged (a corrupt model cache, checkpoint or adapter) or training diverged."
        )

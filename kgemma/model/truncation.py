"""Fitting a tokenized review into a token budget: keep its head, its tail, or both."""

import tensorflow as tf

TRUNCATIONS = ("head", "tail", "head_tail")
# Sun et al. (2019), "How to Fine-Tune BERT for Text Classification": on IMDB, keeping
# the first quarter and the last three quarters of the budget beat head-only and tail-only.
HEAD_TAIL_HEAD_SHARE = 0.25


def head_tail_sizes(budget, truncation):
    """How many leading and trailing tokens a truncation strategy keeps."""
    if truncation == "head":
        return budget, 0
    if truncation == "tail":
        return 0, budget
    head = int(budget * HEAD_TAIL_HEAD_SHARE)
    return head, budget - head


def truncate_tokens(token_ids, budget, truncation="head"):
    """Truncate a ragged `(batch, None)` tensor of token ids to at most `budget` a row.

    A row no longer than the budget is kept whole; a longer row keeps its first
    `head` and last `tail` tokens, where `head + tail == budget`.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}.")
    head, tail = head_tail_sizes(budget, truncation)
    lengths = token_ids.row_lengths()
    positions = tf.ragged.range(lengths)
    tail_start = tf.expand_dims(lengths - tail, 1)
    keep = (positions < head) | (positions >= tail_start)
    return tf.ragged.boolean_mask(token_ids, keep)

"""Which words decided a review: integrated gradients and occlusion.

Integrated gradients (Sundararajan, Taly and Yan, 2017) attribute the target class's
logit to the input embeddings: `(x - baseline) * mean over a in (0, 1] of dF/dx at
baseline + a (x - baseline)`, summed over each token's embedding. The baseline is the
review with every token after `<bos>` replaced by the padding token: a review of the
same length with nothing in it. (The zero embedding, the other common choice, sits on
the RMS norms' singularity: near it the first norm's output jumps from 0 to full scale
within a few thousandths of the path, which a 32-step integral misses; on a tiny Gemma 3
the attributions then summed to -0.2 of the logit difference.) The attributions sum to
`F(x) - F(baseline)` when the path integral is exact; how close they come
(`completeness`) is the method's own check figure. The gradient runs through
`classifier.upper_stack(depth=0)`: the whole model from the embeddings on, fused blocks
and LoRA branches included.

Occlusion drops one word at a time and scores the review again: a word's score is how
much the target class's probability falls without it.
"""

import re

import keras
import numpy as np

from kgemma.data.text import word_spans
from kgemma.model.frozen_prefix import embed_tokens
from kgemma.model.text import check_not_empty
from kgemma.model.text import check_texts

METHODS = ("integrated_gradients", "occlusion")
# Integration steps to start from, and how far the attributions' sum may stay from the
# logit difference before the steps are doubled. On the embedded Gemma 3 270M (one review
# at 128 tokens, midpoint rule) 32 steps gave completeness 0.70, 64 gave 1.21 and 128 gave
# 0.955, and 128 gave 0.89 on the same model after a few training steps: no fixed count
# was safe.
DEFAULT_STEPS = 64
DEFAULT_TOLERANCE = 0.05
MAX_STEPS = 1024
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPACE = "\u2581"  # SentencePiece's word-start mark.


def explain(
    classifier,
    texts,
    method="integrated_gradients",
    steps=DEFAULT_STEPS,
    tolerance=DEFAULT_TOLERANCE,
    target=None,
    batch_size=8,
    on_progress=None,
):
    """Per review: its tokens (or words, for occlusion), one score each for `target`
    (default: the predicted class), the target's probability and the method's check.

    Returns a list of dicts: `text`, `tokens` (text pieces that join into the review as
    the model read it: cleaned and truncated), `scores` (floats, positive for evidence
    for the target), `target` (label name), `probability` (the target's), `method`, and
    for integrated gradients `completeness` (the scores' sum over `F(x) - F(baseline)`;
    1 when exact), `logit_delta` (`F(x) - F(baseline)`, the target logit's) and `steps`
    (those used: from `steps`, doubled until completeness is within `tolerance` of 1 or
    `MAX_STEPS` is reached; `tolerance=None` keeps `steps`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}.")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}.")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"tolerance must be a positive number or None, got {tolerance!r}.")
    texts = check_texts(texts)
    features = classifier.preprocessor(texts)
    token_ids, mask = np.asarray(features["token_ids"]), np.asarray(features["padding_mask"])
    check_not_empty(texts, mask.sum(axis=1) - 1)
    # The features already made, not predict_proba(texts), which would tokenize them again.
    features = {"token_ids": token_ids, "padding_mask": mask}
    probabilities = keras.ops.convert_to_numpy(
        classifier.probabilities(classifier.logits_for_features(features, batch_size))
    )
    if method == "integrated_gradients":
        upper, gradients = _upper_and_gradients(classifier)
    names = list(classifier.preprocessor.label_names)
    targets = [_target_index(target, names, p) for p in probabilities]
    results = []
    for i, text in enumerate(texts):
        ids = token_ids[i, : int(mask[i].sum())]
        result = {"text": text, "target": names[targets[i]], "probability": float(probabilities[i, targets[i]])}
        if method == "integrated_gradients":
            scores, delta, used = _integrated_gradients(
                classifier, upper, gradients, ids, targets[i], steps, tolerance, batch_size
            )
            result.update(
                steps=used,
                tokens=token_pieces(classifier.preprocessor.tokenizer, ids[1:]),
                scores=[float(s) for s in scores[1:]],
                completeness=float(scores.sum() / delta) if delta else None,
                logit_delta=float(delta),
            )
        else:
            words, scores = _occlusion(classifier, ids, targets[i], result["probability"], batch_size)
            result.update(tokens=words, scores=scores)
        results.append({**result, "method": method})
        if on_progress is not None:
            on_progress(i + 1, len(texts))
    return results


def _target_index(target, names, probabilities):
    if target is None:
        return int(np.argmax(probabilities))
    if isinstance(target, str) and target in names:
        return names.index(target)
    if isinstance(target, (int, np.integer)) and 0 <= target < len(names):
        return int(target)
    raise ValueError(f"target must be a class index or one of {names}, got {target!r}.")


def token_pieces(tokenizer, ids):
    """The text of each token id: SentencePiece pieces with their word-start mark as a
    space, byte-fallback tokens decoded (a multi-byte character goes to its last byte)."""
    pieces, pending = [], b""
    for token_id in ids:
        piece = tokenizer.id_to_token(int(token_id))
        byte = _BYTE_PIECE.match(piece)
        if byte:
            pending += bytes([int(byte.group(1), 16)])
            try:
                pieces.append(pending.decode("utf-8"))
                pending = b""
            except UnicodeDecodeError:
                pieces.append("")  # An incomplete character: shown with its last byte.
            continue
        pieces.append(piece.replace(_SPACE, " "))
    if pieces and pieces[0].startswith(" ") and _adds_dummy_prefix(tokenizer):
        # SentencePiece's dummy prefix: a word-start mark before the first word, not in the text.
        pieces[0] = pieces[0][1:]
    return pieces


def _adds_dummy_prefix(tokenizer):
    """Whether the tokenizer marks a text's first word as a word start."""
    return tokenizer.id_to_token(int(np.asarray(tokenizer("a"))[0])).startswith(_SPACE)


def _integrated_gradients(classifier, upper, gradients, ids, target, steps, tolerance, batch_size):
    """Per-token attributions (float32, `<bos>` first), `F(x) - F(baseline)` and the steps used.

    The path integral is the trapezoid rule on `steps` intervals, halved until the
    attributions sum to within `tolerance` of `F(x) - F(baseline)` or `MAX_STEPS` is
    reached: each halving scores only the new midpoints, so reaching 2N steps costs N
    more gradients. `upper` is `classifier.upper_stack(depth=0)`, `gradients` its
    `_gradient_function`."""
    pad = classifier.preprocessor.tokenizer.pad_token_id
    baseline_ids = np.concatenate([ids[:1], np.full(len(ids) - 1, pad, dtype=ids.dtype)])
    x, baseline = (
        keras.ops.convert_to_numpy(embed_tokens(classifier.backbone, row[None, :])).astype("float32")[0]
        for row in (ids, baseline_ids)
    )
    mask = np.ones((1, len(ids)), dtype="int32")
    logits = _target_logits(upper, np.stack([baseline, x]), np.repeat(mask, 2, axis=0), target)
    delta = float(logits[1] - logits[0])
    # Path points per pass: `batch_size` rows of the model's full length, as many more
    # rows as fit in the same tokens when the review is shorter (a 12-token review takes
    # 64 steps in one pass at batch 8 and 128 tokens, not 8 passes).
    rows = max(batch_size, batch_size * classifier.preprocessor.sequence_length // len(ids))

    def gradient_sum(alphas):
        total = np.zeros_like(x)
        for start in range(0, len(alphas), rows):
            chunk = alphas[start : start + rows].astype("float32")
            path = baseline[None] + chunk[:, None, None] * (x - baseline)[None]
            total += gradients(path, np.repeat(mask, len(chunk), axis=0), target).sum(axis=0)
        return total

    ends = gradient_sum(np.array([0.0, 1.0]))
    interior = gradient_sum(np.arange(1, steps) / steps)
    while True:
        attributions = ((x - baseline) * (ends / 2 + interior) / steps).sum(axis=-1)
        converged = tolerance is None or not delta or abs(attributions.sum() / delta - 1) <= tolerance
        if converged or 2 * steps > MAX_STEPS:
            return attributions, delta, steps
        interior += gradient_sum((np.arange(steps) + 0.5) / steps)
        steps *= 2


def _upper_and_gradients(classifier):
    """The whole model from the embeddings up and its gradient function, built once per
    classifier and reused by every call (each new gradient function traces the whole model
    again). Views sharing the classifier's weights, kept off its tracked attributes as its
    scoring models are, so they are never saved with it."""
    if not hasattr(classifier, "_kgemma_gradients"):
        upper = classifier.upper_stack(depth=0)
        object.__setattr__(classifier, "_kgemma_gradients", (upper, _gradient_function(upper)))
    return classifier._kgemma_gradients


def _logits(upper, hidden, mask):
    outputs = upper({"hidden_states": keras.ops.cast(hidden, upper.compute_dtype), "padding_mask": mask})
    return keras.ops.cast(outputs, "float32")


def _target_logits(upper, hidden, mask, target):
    return keras.ops.convert_to_numpy(_logits(upper, keras.ops.convert_to_tensor(hidden), mask))[:, target]


def _gradient_function(upper):
    """`(hidden, mask, target) -> d logit[target] / d hidden` per row, float32 numpy, on
    any Keras backend. On TensorFlow a `tf.function` traced once, for any batch, length
    and class (the target is a tensor): one trace per review, or per new batch shape,
    traced the whole model again each time. 128 steps of a 128-token review through the
    real model took 69 s compiled, 107 s eager (tracing included; 2 cores)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        signature = [
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]

        @tf.function(autograph=False, input_signature=signature)
        def gradients(hidden, mask, target):
            with tf.GradientTape() as tape:
                tape.watch(hidden)
                total = tf.reduce_sum(tf.gather(_logits(upper, hidden, mask), target, axis=1))
            return tape.gradient(total, hidden)

        return lambda hidden, mask, target: gradients(
            tf.constant(hidden), tf.constant(mask), tf.constant(target, tf.int32)
        ).numpy()
    if backend == "torch":
        import torch

        def torch_gradients(hidden, mask, target):
            hidden = keras.ops.convert_to_tensor(hidden).detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(_logits(upper, hidden, mask)[:, target].sum(), hidden)
            return gradient.detach().cpu().numpy()

        return torch_gradients
    if backend == "jax":
        import jax

        return lambda hidden, mask, target: np.asarray(
            jax.grad(lambda h: _logits(upper, h, mask)[:, target].sum())(hidden)
        )
    raise ValueError(f"Integrated gradients need the TensorFlow, JAX or torch backend, not {backend}.")


def _occlusion(classifier, ids, target, probability, batch_size):
    """Words (pieces grouped at word starts) and, per word, the target probability's
    fall when the word's tokens are left out."""
    pieces = token_pieces(classifier.preprocessor.tokenizer, ids[1:])
    spans = word_spans(pieces)
    words = ["".join(pieces[a:b]) for a, b in spans]
    # Each occluded review: <bos> and every token outside the word, as token ids.
    rows = [np.concatenate([ids[:1], ids[1:][:a], ids[1:][b:]]) for a, b in spans]
    width = len(ids)
    token_ids = np.zeros((len(rows), width), dtype=ids.dtype)
    padding_mask = np.zeros((len(rows), width), dtype="int32")
    for j, row in enumerate(rows):
        token_ids[j, : len(row)], padding_mask[j, : len(row)] = row, 1
    features = {"token_ids": token_ids, "padding_mask": padding_mask}
    probabilities = keras.ops.convert_to_numpy(
        classifier.probabilities(classifier.logits_for_features(features, batch_size))
    )
    return words, [float(probability - p[target]) for p in probabilities]

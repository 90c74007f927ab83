"""Batches of reviews of similar length, so a batch is padded only to its longest one:
sorted for scoring (`length_sorted_batches`, `predict_rows`) and in a seeded, shuffled
order for training (`epoch_batches`)."""

import keras
import numpy as np

# Batch widths are rounded up to a multiple of this, so a compiled model sees few shapes.
# 16, not 64: on 64 real IMDB reviews at up to 512 tokens, 16 padded to 270 tokens a batch
# on average against 296 and scored 15-20% more reviews/s (docs/performance.md); TensorFlow's
# predict and train steps generalize to any width after two, so finer steps trace no more.
WIDTH_STEP = 16

# Training reviews are sorted by length inside windows of this many batches, so batches
# hold similar lengths while the order stays random.
SORT_WINDOW_BATCHES = 50


def padded_width(length, step=WIDTH_STEP, limit=None):
    width = -(-int(length) // step) * step
    return min(width, limit) if limit else width


def length_sorted_batches(lengths, batch_size, limit, step=WIDTH_STEP):
    """Yield `(row_indices, width)` batches of rows sorted by length.

    `width` is the batch's longest length rounded up to `step`, capped at `limit`
    (the padded sequence length), so callers can trim padding columns. Every batch
    has `batch_size` rows: a short last batch repeats its last row, which keeps the
    batch shape fixed (one compiled step, and a batch that splits evenly across
    data-parallel replicas); scattering outputs back by row writes it twice.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        if len(order) > batch_size:
            rows = np.concatenate([rows, np.repeat(rows[-1:], batch_size - len(rows))])
        yield rows, padded_width(lengths[rows].max(), step, limit=limit)


def batch_outputs(predict, lengths, batch_size, limit, batch_inputs):
    """Yield `(row_indices, outputs)` for every length-sorted batch: `outputs` is
    `predict(batch_inputs(row_indices, width))` as a numpy array. The one loop
    through which kgemma scores reviews (logits, or a frozen prefix's states)."""
    for rows, width in length_sorted_batches(lengths, batch_size, limit=limit):
        yield rows, keras.ops.convert_to_numpy(predict(batch_inputs(rows, width)))


def predict_rows(predict, lengths, batch_size, limit, batch_inputs):
    """`batch_outputs` gathered into one array, a row per review in the original order."""
    gathered = None
    for rows, outputs in batch_outputs(predict, lengths, batch_size, limit, batch_inputs):
        if gathered is None:
            gathered = np.zeros((len(lengths),) + outputs.shape[1:], dtype=outputs.dtype)
        gathered[rows] = outputs
    return gathered


def epoch_batches(lengths, batch_size, epoch, seed, limit, multiple=1):
    """The training batches of one epoch: a list of `(row_indices, width)`.

    The same `(seed, epoch)` always gives the same batches, which is what lets a
    killed run resume at the exact step it stopped. With `multiple` (data-parallel
    replicas), a short batch drops the rows that do not split evenly.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * SORT_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            rows = chunk[b : b + batch_size]
            rows = rows[: len(rows) - len(rows) % multiple]
            if not len(rows):
                continue
            batches.append((rows, padded_width(lengths[rows].max(), limit=limit)))
    return [batches[i] for i in rng.permutation(len(batches))]


def review_batches(features, labels, batch_size, seed=0):
    """Preprocessed reviews as a `tf.data.Dataset` of `(x, y)` batches: each epoch
    takes `epoch_batches(..., epoch, seed)`, padding trimmed to the batch's width,
    which are the batches `kgemma.training.fit` trains on. It is how
    `GemmaSentimentClassifier.fit` feeds Keras's `fit`.

    Not a `keras.utils.PyDataset`: Keras reads a PyDataset's shapes from its first
    two batches and fixes every dimension on which they agree, so a later batch of
    another width would be refused; here the width is declared variable.
    """
    import tensorflow as tf

    features = {k: np.asarray(v) for k, v in features.items()}
    labels = np.asarray(labels)
    lengths = features["padding_mask"].sum(axis=1)
    limit = features["token_ids"].shape[1]
    epoch = 0

    def batches():
        # Keras iterates the dataset afresh each epoch: each pass is the next epoch.
        nonlocal epoch
        for rows, width in epoch_batches(lengths, batch_size, epoch, seed, limit):
            yield {k: v[rows, :width] for k, v in features.items()}, labels[rows]
        epoch += 1

    x_spec = {k: tf.TensorSpec((None, None), tf.as_dtype(v.dtype)) for k, v in features.items()}
    y_spec = tf.TensorSpec((None,), tf.as_dtype(labels.dtype))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=(x_spec, y_spec))
    # Every epoch has as many batches (the same windows, shuffled), so Keras knows its length.
    return dataset.apply(
        tf.data.experimental.assert_cardinality(len(epoch_batches(lengths, batch_size, 0, seed, limit)))
    )

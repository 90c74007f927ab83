"""Pooling a padded sequence of hidden states into one vector per review."""

import keras
from keras import ops

POOLING_MODES = ("mean", "last")


@keras.saving.register_keras_serializable(package="kgemma")
class SequencePooling(keras.layers.Layer):
    """Pools `(batch, length, hidden)` states into `(batch, hidden)` under a padding mask.

    Padding positions never contribute, so a review pools to the same vector alone
    or inside a padded batch.

    Args:
        mode: `"mean"` averages the non-padding positions; `"last"` takes the last
            non-padding position (for a causal decoder, the only one that has read
            the whole review).

    Example:
    ```python
    import numpy as np
    states = np.random.rand(2, 4, 8).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    SequencePooling("last")(states, mask)  # rows: states[0, 2], states[1, 3]
    ```
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}.")
        self.mode = mode

    def call(self, sequence, padding_mask):
        mask = ops.cast(padding_mask, sequence.dtype)
        if self.mode == "mean":
            total = ops.sum(sequence * mask[:, :, None], axis=1)
            count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
            return total / count
        # Works for any padding side: the last position whose mask is set.
        positions = ops.arange(ops.shape(mask)[1], dtype="int32")
        last = ops.max(ops.where(ops.cast(mask, "bool"), positions[None, :], 0), axis=1)
        return ops.take_along_axis(sequence, last[:, None, None], axis=1)[:, 0, :]

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

"""The training loss: cross-entropy on integer labels, optionally label-smoothed."""

import keras


@keras.saving.register_keras_serializable(package="kgemma")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing.

    Keras smooths only one-hot labels (`CategoricalCrossentropy(label_smoothing=)`),
    and kgemma's batches carry integer labels, so this one-hot encodes them first.
    The target puts `1 - label_smoothing + label_smoothing / num_classes` on the
    true class and `label_smoothing / num_classes` on each other one.

    Args:
        num_classes: int, the number of classes.
        label_smoothing: float in `[0, 1)`.
        from_logits: bool, whether predictions are logits (kgemma's default head).
    """

    def __init__(
        self, num_classes, label_smoothing=0.0, from_logits=True, name="sparse_smoothed_crossentropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }


def training_loss(classifier, label_smoothing=0.0):
    """The loss `fit` compiles with: Keras's sparse cross-entropy, or, with
    `label_smoothing`, `SparseSmoothedCrossentropy` (equal to it at 0)."""
    from_logits = classifier.activation != keras.activations.softmax
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    return SparseSmoothedCrossentropy(classifier.num_classes, label_smoothing, from_logits=from_logits)

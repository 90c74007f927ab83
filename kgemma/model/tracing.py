"""Keras steps traced once for batches of any width and size (TensorFlow backend).

kgemma pads each batch only to its longest review (rounded up to 16 tokens), so
widths vary from batch to batch; a training epoch's short batches vary the row count
too, and so does scoring fewer reviews than a batch (`predict_proba` on one review,
then on three). Keras traces its TensorFlow steps with `reduce_retracing`: the first
shape, then once more for any shape. One trace of the embedded model's 18 blocks
takes 10 s or more on a 2-core CPU (a training step's, with its gradient, 15-19 s on
an AVX2 one), so `AnyWidthSteps` traces the first call for any width and row count
at once, and a training step only once (its optimizer built before the trace). The
relaxed scoring graph runs as fast as a fixed-size one (docs/performance.md). Other
backends are left as Keras runs them.
"""

import keras
import numpy as np


def any_batch_spec(data):
    """`data` as TensorFlow input specs whose first two axes (rows, and tokens where
    there are two) take any length; None unless every input is a numpy array or a
    tensor (a distribution strategy's per-replica values are left to Keras)."""
    import tensorflow as tf

    leaves = [x for x in keras.tree.flatten(data) if x is not None]  # No sample weights, say.
    if not leaves or not all(isinstance(x, (np.ndarray, tf.Tensor)) for x in leaves):
        return None

    def spec(x):
        if x is None:
            return None
        shape = list(x.shape)
        shape[:2] = [None] * len(shape[:2])
        return tf.TensorSpec(shape, tf.as_dtype(x.dtype))

    return keras.tree.map_structure(spec, data)


def _traces(model):
    """Whether `model`'s steps are TensorFlow graphs that this module may relax."""
    return keras.backend.backend() == "tensorflow" and not model.run_eagerly


class AnyWidthSteps:
    """A mixin for a `keras.Model` (before it in the bases): its TensorFlow predict
    step (`predict_on_batch`) and train step (`train_on_batch`) are each traced once
    for batches of any width and size, and the train step only once, its optimizer built
    before it is traced (in `fit` too). `fit`, `predict` and `evaluate` on datasets
    otherwise keep Keras's own steps."""

    def make_predict_function(self, force=False):
        if self.predict_function is not None and not force:
            return self.predict_function
        super().make_predict_function(force)
        function = self.predict_function
        if not _traces(self) or not hasattr(function, "get_concrete_function"):
            return function

        def predict_any_width(data):
            if not function.experimental_get_tracing_count():
                spec = any_batch_spec(data)
                if spec is not None:
                    function.get_concrete_function(spec)
            return function(data)

        predict_any_width.function = function  # For tests: its tracing count.
        self.predict_function = predict_any_width
        return predict_any_width

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force)
        keras_function = self.train_function  # Takes an iterator of batches.
        if not _traces(self):
            return keras_function
        import tensorflow as tf

        # Keras's step, called on one batch inside a graph of our own: the step's
        # own `tf.function` is traced there, once, on the relaxed specs.
        function = tf.function(lambda data: keras_function(iter([data])), reduce_retracing=True)

        def train_any_width(iterator):
            self._build_optimizer()
            if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                return keras_function(iterator)  # Keras's fit: its own multi-step loop.
            outputs = None
            for data in iterator:  # `train_on_batch` gives one batch.
                spec = any_batch_spec(data)
                if spec is None:
                    outputs = keras_function(iter([data]))
                    continue
                if not function.experimental_get_tracing_count():
                    function.get_concrete_function(spec)
                outputs = function(data)
            return outputs

        self.train_function = train_any_width
        return train_any_width

    def _build_optimizer(self):
        """Build the optimizer's variables now. Without a distribution strategy,
        Keras's TensorFlow trainer leaves them to the first trace of the train step,
        and a `tf.function` that creates variables is traced a second time (for
        the embedded model, 15-19 s more on a 2-core AVX2 CPU: docs/performance.md).
        `save` needs it too, so that the optimizer's state loads back."""
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)


class AnyWidthModel(AnyWidthSteps, keras.Model):
    """A `keras.Model` with `AnyWidthSteps`."""

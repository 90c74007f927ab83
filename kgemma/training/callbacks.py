"""Keras callbacks made for `kgemma.training.fit`."""

import keras


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's `TensorBoard` callback, set up for `kgemma.training.fit` (`kgemma-train
    --tensorboard DIR`): every step's loss, accuracy, learning rate and reviews/s
    (`batch_*`), and every epoch's training and validation figures (`epoch_*`).

    Keras's own callback counts steps from 0 in each process, so a resumed run would
    draw its curves again from step 1; this one starts at the run's `global_step`,
    which `fit` passes to `on_train_begin`. The model graph is not written (the
    training model is traced per batch width, and only TensorFlow could write it).

    Args:
        log_dir: the folder for TensorBoard's event files.
        **kwargs: Keras's `TensorBoard` arguments; `update_freq` defaults to
            `"batch"` here.

    Examples:
    ```python
    from kgemma.training import TensorBoard, TrainingConfig, run_training

    run_training(TrainingConfig(max_examples=400), "runs/tb", callbacks=[TensorBoard("runs/tb/logs")])
    # tensorboard --logdir runs/tb/logs
    ```
    """

    def __init__(self, log_dir="logs", **kwargs):
        try:
            import tensorboard  # noqa: F401  (tf.summary writes through it)
        except ImportError as e:
            raise ImportError(
                "TensorBoard logs need the tensorboard package: pip install 'kgemma[tensorboard]'."
            ) from e
        kwargs.setdefault("update_freq", "batch")
        kwargs["write_graph"] = False
        super().__init__(log_dir=str(log_dir), **kwargs)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # Keras's step counter (advanced in on_train_batch_begin), moved to where the run is.
        self._global_train_batch = int((logs or {}).get("global_step", 0))

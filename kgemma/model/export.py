"""A TensorFlow SavedModel that serves raw text: tokenizer, model and probabilities in one graph.

Keras's `Model.export` serves a model's own inputs, here token ids and a padding mask,
so every client would need Gemma's tokenizer and kgemma's clean-up and truncation.
`export_text_model` writes one `serve` endpoint from a batch of strings to class
probabilities instead, built with Keras's own `ExportArchive`.
"""

import keras

from kgemma.model.batching import WIDTH_STEP

SERVE_ENDPOINT = "serve"


def export_text_model(classifier, filepath, verbose=True):
    """Write `classifier` as a SavedModel whose `serve(texts)` takes a `tf.string` batch
    of raw reviews and returns float32 class probabilities, `(batch, num_classes)`, as
    `predict_proba` computes them (clean-up, truncation, temperature included).

    Loading it needs TensorFlow and TensorFlow Text (for the SentencePiece op), not
    kgemma or Keras: `import tensorflow_text; tf.saved_model.load(path).serve(...)`.
    TensorFlow backend only. Empty texts are not refused there, as `predict_proba`
    refuses them; they score as `<bos>` alone.
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "A raw-text SavedModel is written from Keras's TensorFlow backend (KERAS_BACKEND=tensorflow); "
            f"this is {keras.backend.backend()}. Save an adapter here and export it there."
        )
    if classifier.preprocessor is None:
        raise ValueError("Exporting a raw-text SavedModel needs a preprocessor; this classifier has none.")

    def serve(texts):
        features = classifier.preprocessor(texts)
        # Trimmed to the batch's longest review rounded up to WIDTH_STEP tokens, as
        # predict_proba trims its batches (`padded_width`): short texts cost little.
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(features["padding_mask"], "int32"), axis=1))
        width = tf.minimum(-(-longest // WIDTH_STEP) * WIDTH_STEP, tf.shape(features["token_ids"])[1])
        features = {name: value[:, :width] for name, value in features.items()}
        # The scoring model: the function and weights predict_proba runs (fused Gemma 3 blocks).
        outputs = tf.cast(classifier.scoring_model(int8=False)(features, training=False), "float32")
        return classifier.probabilities(outputs)

    for layer in (classifier.preprocessor, classifier):
        if not layer.built:  # Keras exports built layers only; a first call builds them.
            layer.build(None)
    archive = keras.export.ExportArchive()
    # The endpoint's variables are tracked by `add_endpoint` itself. `track(classifier)` would
    # list each of them a second time, and the SavedModel would store every weight twice (as
    # Keras 3.15's own `Model.export` does with TensorFlow 2.21: 1.09 GB instead of 0.54 GB for
    # the 270M model in bfloat16). The preprocessor is tracked for its tokenizer's SentencePiece
    # model, a resource that is not a variable.
    archive.track(classifier.preprocessor)
    archive.add_endpoint(SERVE_ENDPOINT, serve, input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    archive.write_out(str(filepath), verbose=verbose)

"""The first training steps of the embedded model: what tracing costs a training run.

    python benchmarks/first_steps.py --data ../shared/data/imdb

Trains `--steps` steps on real IMDB reviews in length-sorted batches of 8 (so the
batches have different widths, as in `kgemma.training`), and prints each step's
seconds and the seconds spent running Keras's train step in Python, which is the
tracing (a traced step runs it once per trace; a compiled one never). `--grappler`
passes TensorFlow graph-optimizer options (`tf.config.optimizer`) as JSON. It
asserts nothing.
"""

import json
import os
import time

import click
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="IMDB folder (train.jsonl.gz).")
@click.option("--sequence-length", default=128, show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--lora-layers", default=None, type=int, help="LoRA on the top N blocks (default: all).")
@click.option("--steps", default=3, show_default=True)
@click.option("--grappler", default=None, help="e.g. '{\"disable_meta_optimizer\": true}'.")
def main(data, sequence_length, dtype, lora_layers, steps, grappler):
    import keras
    import tensorflow as tf

    from kgemma import GemmaSentimentClassifier
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample
    from kgemma.model.batching import length_sorted_batches
    from kgemma.model.preprocessor import tokenize
    from kgemma.scaling.distribution import SingleDevice
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import training_model

    if grappler:
        tf.config.optimizer.set_experimental_options(json.loads(grappler))
    config = TrainingConfig(sequence_length=sequence_length, dtype=dtype, lora_layers=lora_layers, cache_prefix=False)
    keras.utils.set_random_seed(config.seed)
    clf = GemmaSentimentClassifier.from_preset(dtype=dtype, **config.classifier_options())
    model, _ = training_model(clf, config, total_steps=100)
    reviews = stratified_sample(load_imdb("train", data), 8 * steps, seed=0)
    features = tokenize(clf.preprocessor, reviews.texts)
    labels = np.asarray(reviews.labels)
    lengths = features["padding_mask"].sum(axis=1)

    traced = []  # Seconds of each Python run of Keras's train step.
    keras_step = model.train_step

    def timed_step(data):
        started = time.perf_counter()
        outputs = keras_step(data)
        traced.append(time.perf_counter() - started)
        return outputs

    model.train_step = timed_step
    print(f"{keras.backend.backend()}, {clf.backbone.dtype_policy.name}, lora_layers={lora_layers}", flush=True)
    for step, (rows, width) in enumerate(length_sorted_batches(lengths, 8, limit=sequence_length)):
        before = len(traced), sum(traced)
        started = time.perf_counter()
        x = {k: v[rows, :width] for k, v in features.items()}
        SingleDevice().train_on_batch(model, x, labels[rows])
        print(
            f"step {step + 1}: width {width}, {time.perf_counter() - started:.1f} s, of which "
            f"{sum(traced) - before[1]:.1f} s in {len(traced) - before[0]} traces of the train step",
            flush=True,
        )


if __name__ == "__main__":
    main()

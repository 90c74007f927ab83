"""Training steps of the embedded model through keras-hub's blocks and through kgemma's fused ones.

    python benchmarks/training_blocks.py --data ../shared/data/imdb

Builds two models sharing one classifier's weights and optimizer: the classifier as
`kgemma.training` (and Keras's `clf.fit`) trains it, whose `call` runs the fused blocks
(`kgemma.model.fused_blocks`), and a `ClassifierForward` with `fused=False`, which runs
keras-hub's `Gemma3DecoderBlock`s (what both trained through before), compiled alike.
Takes one untimed step on each (the trace), then `--rounds` timed steps each on the
same batch of the `--batch-size` longest reviews of a stratified sample, alternating
which goes first, so that a noisy machine weighs on both alike. Prints the seconds and
the largest logit difference of the two models on that batch. It asserts nothing.
"""

import os
import time

import click
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="IMDB folder (train.jsonl.gz).")
@click.option("--sequence-length", default=128, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--lora-layers", default=None, type=int, help="LoRA on the top N blocks (default: all).")
@click.option("--rounds", default=4, show_default=True)
def main(data, sequence_length, batch_size, dtype, lora_layers, rounds):
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample
    from kgemma.model.frozen_prefix import ClassifierForward
    from kgemma.model.preprocessor import tokenize
    from kgemma.scaling.distribution import SingleDevice
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import compile_for_training
    from kgemma.training.trainer import training_model

    config = TrainingConfig(sequence_length=sequence_length, dtype=dtype, lora_layers=lora_layers, cache_prefix=False)
    keras.utils.set_random_seed(config.seed)
    clf = GemmaSentimentClassifier.from_preset(dtype=dtype, **config.classifier_options())
    fused, _ = training_model(clf, config, total_steps=100)
    plain = ClassifierForward(clf, fused=False, name="keras_hub_blocks")
    compile_for_training(plain, clf, config)
    models = {"keras-hub blocks": plain, "fused blocks": fused}

    reviews = stratified_sample(load_imdb("train", data), 8 * batch_size, seed=0)
    features = tokenize(clf.preprocessor, reviews.texts)
    rows = np.argsort(-features["padding_mask"].sum(axis=1), kind="stable")[:batch_size]
    width = int(features["padding_mask"][rows].sum(axis=1).max())
    x = {k: v[rows, :width] for k, v in features.items()}
    y = np.asarray(reviews.labels)[rows]
    print(
        f"{keras.backend.backend()}, {clf.backbone.dtype_policy.name}, lora_layers={lora_layers}, "
        f"batch {batch_size} x {width}",
        flush=True,
    )

    def step(model):
        started = time.perf_counter()
        SingleDevice().train_on_batch(model, x, y)
        return time.perf_counter() - started

    for name, model in models.items():
        print(f"{name}: first step {step(model):.1f} s", flush=True)
    seconds = {name: [] for name in models}
    for r in range(rounds):
        for name in list(models)[:: 1 if r % 2 == 0 else -1]:
            seconds[name].append(step(models[name]))
    for name, values in seconds.items():
        print(f"{name}: {', '.join(f'{s:.2f}' for s in values)} s; mean {np.mean(values):.2f} s a step", flush=True)
    logits = [keras.ops.convert_to_numpy(model(x, training=False)) for model in models.values()]
    print(f"largest logit difference: {float(np.abs(logits[0] - logits[1]).max()):.2e}")


if __name__ == "__main__":
    main()

"""The memory helper's estimate beside the measured peak memory of a real run.

    python benchmarks/memory.py --batch-size 8 --sequence-length 256

Measures the process's peak resident memory (ru_maxrss) after loading the embedded
model, after a forward pass, and after LoRA training steps, and prints what
`kgemma.scaling.estimate_memory` predicts for the same settings. On a CPU the
process also holds the TensorFlow runtime, the tokenizer and the conversion
cache's file buffers, so the comparison is of the increments.
"""

import click
import numpy as np
from peak_memory import peak_rss_mb

from kgemma.scaling import KNOWN_CONFIGS
from kgemma.scaling import estimate_memory


def peak_gib():
    return peak_rss_mb() / 1024


@click.command()
@click.option("--batch-size", default=8, show_default=True)
@click.option("--sequence-length", default=256, show_default=True)
@click.option("--lora-layers", type=int, default=None, help="Adapt only the top N blocks.")
@click.option("--steps", default=2, show_default=True)
def main(batch_size, sequence_length, lora_layers, steps):
    """Estimated and measured memory of the embedded model, float32."""
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import training_model

    start = peak_gib()
    clf = GemmaSentimentClassifier.from_preset(lora_layers=lora_layers)
    loaded = peak_gib()
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 8000, size=(batch_size, sequence_length)).astype("int32")
    batch = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    keras.Model.predict_on_batch(clf, batch)
    forward = peak_gib()
    model, _ = training_model(clf, TrainingConfig(lora_layers=lora_layers, cache_prefix=False), 100)
    for _ in range(steps):
        keras.Model.train_on_batch(model, batch, np.arange(batch_size) % 2)
    trained = peak_gib()

    config = KNOWN_CONFIGS["gemma3_270m"]
    infer = estimate_memory(config, batch_size, sequence_length, lora_layers=lora_layers, training=False)
    train = estimate_memory(config, batch_size, sequence_length, lora_layers=lora_layers)
    print(f"batch {batch_size} x {sequence_length} tokens, float32, LoRA on {lora_layers or 'all'} blocks")
    print(
        f"measured peak RSS: {start:.2f} GiB before loading, {loaded:.2f} after, {forward:.2f} after "
        f"a forward pass, {trained:.2f} after {steps} training steps"
    )
    print(f"estimated weights {train.weights / 1024**3:.2f} GiB; measured load increment {loaded - start:.2f} GiB")
    print(
        f"estimated inference activations {infer.activations / 1024**3:.2f} GiB; measured forward increment "
        f"{forward - loaded:.2f} GiB"
    )
    print(
        f"estimated training activations + LoRA state {(train.activations + train.trainable_state) / 1024**3:.2f} GiB; "
        f"measured training increment over the forward pass {trained - forward:.2f} GiB"
    )


if __name__ == "__main__":
    main()

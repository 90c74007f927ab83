"""Compare training settings on a fixed validation set drawn from IMDB's train split.

Every variant trains on the same seeded training rows and is scored on the same
held-out validation rows (both from the train split; the test split is never read).
Variants that share the frozen prefix (dtype, `lora_layers`, sequence length,
truncation) share its cached states, in memory and, with `--cache-dir`, on disk
(`kgemma.training.prefix_cache`), so a variant costs only its upper-block training.

    python benchmarks/ablations.py --data ../shared/data/imdb --train-rows 4000 \\
        --common dtype=bfloat16,lora_layers=4,epochs=1 --cache-dir runs/prefix-cache \\
        --variant base: --variant all_targets:lora_targets=all --variant lr1e-3:learning_rate=1e-3 \\
        --output runs/ablations.jsonl

A variant is `NAME:key=value,key=value` over `TrainingConfig` fields; values are
parsed as JSON where they can be (`8`, `1e-3`, `null`), else taken as strings. One key
is not a field but a lever measured here before it is built into the model:
`mean_of_top=K` pools the mean of the top K blocks' states (each through the final
norm) instead of the last block's alone (`top_layers_model`).
Each finished variant appends one JSON line to `--output`; the script asserts nothing.
"""

import json
import math
import os
import time
from pathlib import Path

import click
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Settings that change the frozen prefix's output: variants differing only elsewhere share it.
# With --prefix-depth the prefix no longer depends on lora_layers.
PREFIX_KEYS = ("dtype", "lora_layers", "sequence_length", "truncation")
SHARED_PREFIX_KEYS = ("dtype", "sequence_length", "truncation")


def parse_variant(text):
    """`"name:key=value,key=value"` -> `(name, {key: value})`."""
    name, _, body = text.partition(":")
    settings = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return name, settings


def ablation_data(data, train_rows, validation_rows, seed):
    """Disjoint, stratified, seeded training and validation rows from the train split."""
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample
    from kgemma.data import train_validation_split

    pool = load_imdb("train", data)
    rest, validation = train_validation_split(pool, validation_rows / len(pool), seed=seed + 1)
    return stratified_sample(rest, train_rows, seed=seed), validation


def top_layers_model(upper, classifier, config, count):
    """`upper` (an `UpperStack`) pooling the mean of its top `count` blocks' states,
    each through the final norm, compiled as the trainer compiles it."""
    from keras import ops

    from kgemma.model.frozen_prefix import UpperStack
    from kgemma.model.fused_blocks import run_blocks
    from kgemma.training.trainer import compile_for_training

    if not 1 <= count <= len(upper.blocks):
        raise click.UsageError(f"mean_of_top={count}: the upper stack has {len(upper.blocks)} blocks.")

    class TopLayersUpperStack(UpperStack):
        def call(self, inputs, training=None):
            mask, x, pooled = inputs["padding_mask"], inputs["hidden_states"], []
            for i, block in enumerate(self.blocks):
                x = run_blocks([block], x, mask, training=training, fused=self.fused)
                if i >= len(self.blocks) - count:
                    pooled.append(self.pooler(self.final_norm(x), mask))
            return self.classifier_head(ops.mean(ops.stack(pooled), axis=0), training=training)

    model = TopLayersUpperStack(classifier, upper.depth, fused=upper.fused, name="top_layers_upper_stack")
    compile_for_training(model, classifier, config)
    return model


def run_variant(
    name,
    config,
    train,
    validation,
    prefix_cache,
    cache_dir,
    eval_points,
    prefix_depth=None,
    logits_dir=None,
    mean_of_top=1,
):
    """Train one variant on cached prefix states; return its record (and, with
    `logits_dir`, save its final validation logits there as `NAME.npz`)."""
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma.model.batching import epoch_batches
    from kgemma.model.preprocessor import tokenize
    from kgemma.training.trainer import loss_and_accuracy
    from kgemma.training.trainer import model_inputs
    from kgemma.training.trainer import predict_logits
    from kgemma.training.trainer import prefix_states
    from kgemma.training.trainer import training_model

    keras.utils.set_random_seed(config.seed)
    clf = GemmaSentimentClassifier.from_preset(dtype=config.dtype, **config.classifier_options())
    keys = PREFIX_KEYS if prefix_depth is None else SHARED_PREFIX_KEYS
    key = json.dumps({"depth": prefix_depth, **{k: getattr(config, k) for k in keys}}, sort_keys=True)
    if key not in prefix_cache:
        prefix_cache.clear()  # One prefix in memory at a time: order variants by prefix.
        features = tokenize(clf.preprocessor, train.texts)
        val_features = tokenize(clf.preprocessor, validation.texts)
        states, val_states = (
            prefix_states(
                clf, f, config.batch_size, config.jit_compile, verbose=1, depth=prefix_depth, cache_dir=cache_dir
            )
            for f in (features, val_features)
        )
        prefix_cache[key] = (features, val_features, states, val_states, states.seconds + val_states.seconds)
    features, val_features, states, val_states, prefix_seconds = prefix_cache[key]
    lengths = features["padding_mask"].sum(axis=1)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    model, cached = training_model(clf, config, total_steps, depth=prefix_depth)
    if not cached:
        raise click.UsageError(
            f"Variant {name!r} has no frozen prefix to cache: set lora_layers below the backbone's depth."
        )
    if mean_of_top > 1:
        model = top_layers_model(model, clf, config, mean_of_top)
    checkpoints = {max(1, round(total_steps * f)) for f in eval_points}
    record = {
        "variant": name,
        "config": config.to_dict(),
        "mean_of_top": mean_of_top,
        "train_rows": len(train),
        "validation_rows": len(validation),
        "prefix_seconds_train_and_validation": round(prefix_seconds, 1),
        "curve": [],
    }
    train_seconds, step = 0.0, 0
    for epoch in range(config.epochs):
        for rows, width in epoch_batches(
            lengths, config.batch_size, epoch, config.seed, features["token_ids"].shape[1]
        ):
            started = time.perf_counter()
            model.train_on_batch(model_inputs(features, rows, width, states), train.labels[rows])
            train_seconds += time.perf_counter() - started
            step += 1
            if step in checkpoints:
                val_logits = predict_logits(model, val_features, config.batch_size, val_states)
                val_loss, val_accuracy = loss_and_accuracy(val_logits, validation.labels)
                point = {
                    "step": step,
                    "reviews": step * config.batch_size,
                    "train_seconds": round(train_seconds, 1),
                    "val_loss": round(val_loss, 4),
                    "val_accuracy": round(val_accuracy, 4),
                }
                record["curve"].append(point)
                print(f"{name}: {point}", flush=True)
    record.update(record["curve"][-1])
    if logits_dir:
        Path(logits_dir).mkdir(parents=True, exist_ok=True)
        np.savez(
            Path(logits_dir) / f"{name}.npz",
            logits=val_logits,
            labels=validation.labels,
            ids=np.asarray(validation.ids),
        )
    return record


@click.command(context_settings={"max_content_width": 100})
@click.option("--data", required=True, help="IMDB folder or tfds; only its train split is read.")
@click.option("--recipe", default="report", show_default=True, help="Named recipe the variants start from.")
@click.option(
    "--common",
    default="",
    help="key=value,... over TrainingConfig fields that every variant shares (a variant's own win).",
)
@click.option("--train-rows", default=4000, show_default=True)
@click.option("--validation-rows", default=2000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    required=True,
    help="NAME:key=value,... over TrainingConfig fields. Repeatable.",
)
@click.option(
    "--eval-at",
    default="1.0",
    show_default=True,
    help="Fractions of training at which to score the validation rows: '0.5,1.0'.",
)
@click.option("--cache-dir", default=None, help="Keep the frozen prefix's states here between runs.")
@click.option(
    "--prefix-depth",
    type=click.IntRange(min=1),
    default=None,
    help=(
        "Cache the prefix up to this block for every variant (at most each variant's frozen depth), "
        "so variants with different lora_layers share it. Their times then include the frozen blocks "
        "above it."
    ),
)
@click.option("--logits-dir", default=None, help="Save each variant's validation logits here (NAME.npz).")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="JSON lines, one per variant.")
def main(
    data,
    recipe,
    common,
    train_rows,
    validation_rows,
    seed,
    variants,
    eval_at,
    cache_dir,
    prefix_depth,
    logits_dir,
    output,
):
    """Train each variant on the same rows and score it on the same validation rows."""
    from kgemma.training import recipe_config

    train, validation = ablation_data(data, train_rows, validation_rows, seed)
    eval_points = [float(f) for f in eval_at.split(",")]
    prefix_cache = {}
    for text in variants:
        name, settings = parse_variant(text)
        settings = {**parse_variant(f"common:{common}")[1], **settings}
        mean_of_top = int(settings.pop("mean_of_top", 1))
        config = recipe_config(recipe, **{"seed": seed, **settings})
        record = run_variant(
            name, config, train, validation, prefix_cache, cache_dir, eval_points, prefix_depth, logits_dir, mean_of_top
        )
        with open(output, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            f"{name}: validation accuracy {record['val_accuracy']:.2%}, loss {record['val_loss']:.4f}, "
            f"{record['train_seconds'] / 60:.1f} min of upper-block training",
            flush=True,
        )


if __name__ == "__main__":
    main()

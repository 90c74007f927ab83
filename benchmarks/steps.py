"""Seconds of one training step and of one scoring call of the embedded model, at fixed lengths.

    KERAS_BACKEND=torch python benchmarks/steps.py --lengths 256,512
    KERAS_BACKEND=torch python benchmarks/steps.py --lengths 256 --profile   # where a step's time goes

Builds the embedded classifier (`--dtype`, default `auto` as `kgemma-train`'s; `--lora-layers`,
default every block; `--frozen-int8/--no-frozen-int8`, default the classifier's own choice for this
machine) and the model `kgemma.training` trains without a cached prefix, so every block runs
forward and backward. For each length, a batch of `--batch-size` rows of random tokens that long:
two training steps and scoring calls left out of the best (the compiles), then `--rounds` of each,
the step and the scoring call alternating. Prints one JSON line per length with every time and the
best; `warmup_train_s` and `warmup_score_s` are the first two calls', so with an empty compile
cache (`TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)`) and lengths in a row (`--lengths 128,144,160`:
torch compiles for the first length's shapes, then once more for any length) they show what
compiling costs.
`--profile` adds torch.profiler's table of the ops that took the most time in one more step
(torch backend). It asserts nothing.
"""

import json
import os
import time

import click
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def seconds(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@click.command()
@click.option("--lengths", default="256,512", show_default=True, help="Comma-separated token lengths.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="The backbone's, as kgemma-train's --dtype.")
@click.option("--lora-layers", default=None, type=int, help="LoRA on the top N blocks (default: all).")
@click.option("--frozen-int8/--no-frozen-int8", default=None, help="Default: the classifier's choice here.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--profile", is_flag=True, help="torch.profiler's top ops of one more step (torch backend).")
def main(lengths, batch_size, dtype, lora_layers, frozen_int8, rounds, profile):
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import training_model

    keras.utils.set_random_seed(0)
    config = TrainingConfig(lora_layers=lora_layers, cache_prefix=False, frozen_int8=frozen_int8, dtype=dtype)
    clf = GemmaSentimentClassifier.from_preset(dtype=config.dtype, **config.classifier_options())
    model, _ = training_model(clf, config, total_steps=1000)
    rng = np.random.default_rng(0)
    for length in (int(n) for n in lengths.split(",")):
        ids = rng.integers(4, clf.backbone.vocabulary_size, size=(batch_size, length)).astype("int32")
        ids[:, 0] = 2  # Gemma's first token
        batch = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
        labels = np.arange(batch_size) % 2

        def train():
            keras.Model.train_on_batch(model, batch, labels)

        def score():
            clf.logits_for_features(batch)

        warmup = {"train": [], "score": []}
        for _ in range(2):
            warmup["train"].append(seconds(train))
            warmup["score"].append(seconds(score))
        times = {"train": [], "score": []}
        for _ in range(rounds):
            times["train"].append(seconds(train))
            times["score"].append(seconds(score))
        print(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "dtype": clf.backbone.dtype_policy.name,
                    "frozen_int8": clf.frozen_int8,
                    "lora_layers": lora_layers or "all",
                    "batch": [batch_size, length],
                    **{f"{k}_best_s": round(min(v), 3) for k, v in times.items()},
                    **{f"{k}_s": [round(t, 3) for t in v] for k, v in times.items()},
                    **{f"warmup_{k}_s": [round(t, 2) for t in v] for k, v in warmup.items()},
                }
            ),
            flush=True,
        )
        if profile and keras.backend.backend() == "torch":
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
                train()
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)


if __name__ == "__main__":
    main()

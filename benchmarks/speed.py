"""Speed of the embedded Gemma 3 270M classifier on this machine, optionally beside
the Hugging Face transformers + PEFT peer on the same weights and the same reviews.

Prints figures (and writes them as JSON with --output); it asserts nothing.

    python benchmarks/speed.py --data ../shared/data/imdb            # kgemma alone
    python benchmarks/speed.py --data ../shared/data/imdb --peer     # and the peer, same run

The peer needs `pip install -e '.[peer]'` (torch, transformers, peft); it runs in a
subprocess so the two frameworks never share a thread pool.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from peak_memory import peak_rss_mb

HERE = Path(__file__).resolve().parent


def machine_ceilings(n=2048, repeats=5):
    """float32 matmul GFLOP/s through numpy (the physical float32 ceiling) and bfloat16
    through TensorFlow (oneDNN, which uses AMX where the CPU has it)."""
    import tensorflow as tf

    def best(run):
        run()
        seconds = min(_timed(run) for _ in range(repeats))
        return 2 * n**3 / seconds / 1e9

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    x = tf.constant(a, dtype=tf.bfloat16)
    bf16 = tf.function(lambda: tf.matmul(x, x))
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {
        "cores": os.cpu_count(),
        "avx512": " avx512f " in flags,
        "amx_bf16": " amx_bf16 " in flags,
        "float32_gflops": best(lambda: a @ a),
        "bfloat16_gflops": best(lambda: bf16().numpy()),
    }


def _timed(run):
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def forward_flops(backbone, tokens_per_row):
    """Multiply-adds x 2 of the backbone's decoder blocks for rows of these lengths:
    the dense projections (every non-embedding weight once per token) and attention
    (scores and weighted values, every query head over every key)."""
    dense = sum(int(np.prod(w.shape)) for w in backbone.weights if "token_embedding" not in w.path)
    per_layer_heads = backbone.num_query_heads * backbone.head_dim
    tokens = np.asarray(tokens_per_row, dtype="float64")
    attention = 2 * 2 * backbone.num_layers * per_layer_heads * tokens**2
    return float((2 * dense * tokens + attention).sum())


def load_classifier(dtype, **options):
    import keras

    from kgemma import GemmaSentimentClassifier

    keras.utils.set_random_seed(0)
    return GemmaSentimentClassifier.from_preset(dtype=None if dtype == "float32" else dtype, **options)


def fixed_batches(length, batch_size, n_batches, vocabulary=8000, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocabulary, size=(n_batches, batch_size, length)).astype("int32")
    ids[:, :, 0] = 2  # <bos>
    return [{"token_ids": b, "padding_mask": np.ones_like(b)} for b in ids]


def time_batches(step, batches):
    """Run every batch once untimed (tracing and compiling each shape), then time a pass."""
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    return time.perf_counter() - started, warmup


def bench_fixed(clf, lengths, batch_size, n_batches, ceiling, train):
    import keras

    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import training_model

    rows = []
    predict = lambda b: keras.Model.predict_on_batch(clf, b)  # noqa: E731
    for length in lengths:
        batches = fixed_batches(length, batch_size, n_batches)
        seconds, warmup = time_batches(predict, batches)
        n = batch_size * n_batches
        flops = forward_flops(clf.backbone, [length] * n)
        rows.append(
            {"mode": "inference", "length": length, "reviews_per_s": n / seconds, "tokens_per_s": n * length / seconds,
             "gflops": flops / seconds / 1e9, "of_float32_ceiling": flops / seconds / 1e9 / ceiling, "warmup_s": warmup}
        )  # fmt: skip
    if train:
        model, _ = training_model(clf, TrainingConfig(jit_compile=clf.jit_compile), 1000)
        labels = np.arange(batch_size) % 2
        batches = fixed_batches(train, batch_size, n_batches)
        seconds, warmup = time_batches(lambda b: keras.Model.train_on_batch(model, b, labels), batches)
        n = batch_size * n_batches
        rows.append({"mode": "training", "length": train, "reviews_per_s": n / seconds, "tokens_per_s": n * train / seconds, "warmup_s": warmup})
    return rows


def real_sample(data, n, seed):
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample

    return stratified_sample(load_imdb("test", data), n, seed=seed)


def bench_real(clf, reviews, batch_size, epochs, cache_prefix):
    """Inference and training on real review lengths: kgemma's length-sorted
    inference batches and length-bucketed training batches."""
    import keras

    from kgemma.training import TrainingConfig
    from kgemma.training.batches import epoch_batches
    from kgemma.training.trainer import model_inputs
    from kgemma.training.trainer import prefix_states
    from kgemma.training.trainer import tokenize
    from kgemma.training.trainer import training_model

    features = tokenize(clf.preprocessor, reviews.texts)
    lengths = features["padding_mask"].sum(axis=1)
    limit = features["token_ids"].shape[1]
    result = {"tokens_mean": float(lengths.mean()), "tokens_median": float(np.median(lengths)), "tokens_max": int(lengths.max())}
    seconds, warmup = time_batches(lambda _: clf.logits_for_features(features, batch_size), [None])
    result["inference_reviews_per_s"] = len(reviews) / seconds
    result["inference_warmup_s"] = warmup

    config = TrainingConfig(lora_layers=clf.lora_layers, cache_prefix=cache_prefix, jit_compile=clf.jit_compile, batch_size=batch_size)
    model, cached = training_model(clf, config, 1000)
    labels = reviews.labels
    prefix_seconds, states = 0.0, None
    if cached:
        prefix_states(clf, features, batch_size, config.jit_compile)  # Traces each width once.
        started = time.perf_counter()
        states = prefix_states(clf, features, batch_size, config.jit_compile)
        prefix_seconds = time.perf_counter() - started
    # Without a cache every epoch costs the same: time one, report it for all.
    timed_epochs = epochs if cached else 1
    batches = [b for epoch in range(timed_epochs) for b in epoch_batches(lengths, batch_size, epoch, 0, limit)]
    step = lambda b: keras.Model.train_on_batch(model, model_inputs(features, b[0], b[1], states), labels[b[0]])  # noqa: E731
    warmup = sum(_timed(lambda b=b: step(b)) for b in {width: (rows, width) for rows, width in batches}.values())
    per_epoch = len(batches) // timed_epochs
    seconds = [_timed(lambda b=b: step(b)) for b in batches]
    first = sum(seconds[:per_epoch]) + prefix_seconds
    result["training_warmup_s"] = warmup
    result["training_first_epoch_reviews_per_s"] = len(reviews) / first
    total = first + sum(seconds[per_epoch:]) if cached else first * epochs
    result[f"training_{epochs}_epochs_reviews_per_s"] = epochs * len(reviews) / total
    result["prefix_seconds"] = prefix_seconds
    return result


def run_peer(reviews, args):
    with tempfile.TemporaryDirectory() as tmp:
        texts = Path(tmp) / "texts.json"
        texts.write_text(json.dumps({"texts": reviews.texts, "labels": reviews.labels.tolist()}))
        out = Path(tmp) / "peer.json"
        command = [sys.executable, str(HERE / "peer.py"), "--texts", str(texts), "--output", str(out),
                   "--max-length", str(args["max_length"]), "--batch-size", str(args["batch_size"]),
                   "--fixed-length", "256", "--batches", str(args["batches"]),
                   "--lora-layers", str(args["peer_lora_layers"] or 0), "--dtype", args["dtype"]]  # fmt: skip
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="IMDB folder (test.jsonl.gz) or tfds.")
@click.option("--sample", default=64, show_default=True, help="Seeded, stratified test reviews for the real-length runs.")
@click.option("--max-length", default=512, show_default=True, help="Sequence limit for the real-length runs, <bos> included.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--batches", default=3, show_default=True, help="Batches per fixed-length measurement.")
@click.option("--lengths", default="128,256,512", show_default=True, help="Fixed lengths for inference.")
@click.option("--dtypes", default="float32,bfloat16", show_default=True)
@click.option("--lora-layers", "lora_layers_options", default="all,4", show_default=True, help="LoRA on all blocks and/or the top N: 'all,4'.")
@click.option("--epochs", default=3, show_default=True, help="Epochs for the real-length training runs (the report's 3).")
@click.option("--jit-compile/--no-jit-compile", default=None, help="Force XLA on or off (default: Keras decides).")
@click.option("--real/--no-real", default=True, show_default=True, help="Also time the real IMDB length distribution.")
@click.option("--peer/--no-peer", default=False, help="Also time the transformers + PEFT peer in the same run.")
@click.option("--peer-dtypes", default="float32", show_default=True, help="The peer's base dtypes: 'float32,bfloat16'.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write the figures as JSON.")
def main(data, sample, max_length, batch_size, batches, lengths, dtypes, lora_layers_options, epochs, jit_compile, real, peer, peer_dtypes, output):
    """Benchmark inference and LoRA training speed of the embedded model."""
    results = {"settings": {"sample": sample, "max_length": max_length, "batch_size": batch_size, "epochs": epochs}}
    results["machine"] = ceilings = machine_ceilings()
    print(f"machine: {ceilings['cores']} cores, AVX-512 {ceilings['avx512']}, AMX-BF16 {ceilings['amx_bf16']}; "
          f"matmul float32 {ceilings['float32_gflops']:.0f} GFLOP/s (numpy), bfloat16 {ceilings['bfloat16_gflops']:.0f} GFLOP/s (TF)")  # fmt: skip
    reviews = real_sample(data, sample, seed=0)
    results["runs"] = []
    for dtype in dtypes.split(","):
        for option in lora_layers_options.split(","):
            lora_layers = None if option == "all" else int(option)
            clf = load_classifier(dtype, sequence_length=max_length, lora_layers=lora_layers)
            clf.compile(jit_compile="auto" if jit_compile is None else jit_compile)
            run = {"dtype": dtype, "lora_layers": option, "jit_compile": bool(clf.jit_compile)}
            if option == lora_layers_options.split(",")[0]:
                run["fixed"] = bench_fixed(clf, [int(x) for x in lengths.split(",")], batch_size, batches, ceilings["float32_gflops"], train=256)
                for row in run["fixed"]:
                    extra = f", {row['gflops']:.0f} GFLOP/s = {row['of_float32_ceiling']:.0%} of the float32 ceiling" if "gflops" in row else ""
                    print(f"{dtype:>8} lora={option:<3} fixed {row['length']:>3} {row['mode']:<9}: {row['reviews_per_s']:.2f} reviews/s, {row['tokens_per_s']:.0f} tokens/s{extra} (untimed first pass {row['warmup_s']:.0f} s)")
            if not real:
                results["runs"].append(run)
                continue
            run["real"] = real_run = bench_real(clf, reviews, batch_size, epochs, cache_prefix=True)
            print(f"{dtype:>8} lora={option:<3} real lengths (mean {real_run['tokens_mean']:.0f} tokens): inference {real_run['inference_reviews_per_s']:.2f} reviews/s; "
                  f"training {real_run['training_first_epoch_reviews_per_s']:.2f} reviews/s (1st epoch), {real_run[f'training_{epochs}_epochs_reviews_per_s']:.2f} over {epochs} epochs")  # fmt: skip
            results["runs"].append(run)
            del clf
    results["peak_rss_mb"] = peak_rss_mb()
    print(f"peak memory (RSS) of the kgemma runs: {results['peak_rss_mb']:.0f} MB")
    if peer and real:
        results["peer"] = {}
        for peer_dtype in peer_dtypes.split(","):
            for option in lora_layers_options.split(","):
                args = {"max_length": max_length, "batch_size": batch_size, "batches": batches, "dtype": peer_dtype,
                        "peer_lora_layers": None if option == "all" else int(option)}  # fmt: skip
                results["peer"][f"{peer_dtype}/{option}"] = p = run_peer(reviews, args)
                print(f"    peer {peer_dtype:>8} lora={option:<3} fixed 256: inference {p['fixed_inference_reviews_per_s']:.2f}, training {p['fixed_training_reviews_per_s']:.2f} reviews/s; "
                      f"real lengths: inference {p['real_inference_reviews_per_s']:.2f}, training {p['real_training_reviews_per_s']:.2f} reviews/s; peak RSS {p['peak_rss_mb']:.0f} MB")  # fmt: skip
        print_ratios(results, epochs)
    if output:
        Path(output).write_text(json.dumps(results, indent=2))


def print_ratios(results, epochs):
    """kgemma's real-length reviews/s over the peer's with the same LoRA layers."""
    print("\nkgemma / peer on real IMDB lengths (same reviews, same sequence limit, LoRA r8/alpha16 on q,v):")
    for run in results["runs"]:
        for key, p in results["peer"].items():
            peer_dtype, option = key.split("/")
            if option != run["lora_layers"]:
                continue
            real = run["real"]
            print(f"  kgemma {run['dtype']:>8} / peer {peer_dtype:>8}, LoRA on {option:>3} blocks: "
                  f"inference x{real['inference_reviews_per_s'] / p['real_inference_reviews_per_s']:.2f}, "
                  f"training x{real['training_first_epoch_reviews_per_s'] / p['real_training_reviews_per_s']:.2f} (one epoch), "
                  f"x{real[f'training_{epochs}_epochs_reviews_per_s'] / p['real_training_reviews_per_s']:.2f} ({epochs} epochs)")  # fmt: skip


if __name__ == "__main__":
    main()

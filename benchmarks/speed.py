"""Speed of the embedded Gemma 3 270M classifier on this machine, optionally beside
the Hugging Face transformers + PEFT peer on the same weights and the same reviews.

Prints figures (and writes them as JSON with --output); it asserts nothing.

    python benchmarks/speed.py --data ../shared/data/imdb            # kgemma alone
    python benchmarks/speed.py --data ../shared/data/imdb --peer     # and the peer, same run
    python benchmarks/speed.py --data ../shared/data/imdb --quick    # headline figures as JSON, < 3 min

The peer needs `pip install -e '.[peer]'` (torch, transformers, peft); it runs in a
subprocess so the two frameworks never share a thread pool. The matmul ceilings are
measured the same way, once per framework (benchmarks/ceilings.py).
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


def machine_ceilings():
    """Matmul ceilings (2048^3) through numpy, TensorFlow and, when installed, torch,
    each in its own process. The bfloat16 ceiling is the best any framework reaches."""
    from kgemma.model.dtypes import CPUINFO
    from kgemma.model.dtypes import cpu_flags

    flags = cpu_flags()
    result = {"cores": os.cpu_count(), "cpu": _cpu_model(CPUINFO.read_text() if CPUINFO.is_file() else "")}
    result.update({flag: flag in flags for flag in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")})
    frameworks = {}
    for framework in ("numpy", "tensorflow", "torch"):
        done = subprocess.run([sys.executable, str(HERE / "ceilings.py"), framework], capture_output=True, text=True)
        if done.returncode == 0:
            frameworks[framework] = json.loads(done.stdout.strip().splitlines()[-1])["gflops"]
    result["frameworks"] = frameworks
    result["float32_gflops"] = max(f.get("float32", 0) for f in frameworks.values())
    result["bfloat16_gflops"] = max(f.get("bfloat16", 0) for f in frameworks.values())
    return result


def _cpu_model(cpuinfo):
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return names[0] if names else "unknown"


def print_ceilings(c):
    amx = "AMX" if c["amx_bf16"] else "no AMX"
    print(f"machine: {c['cores']} cores, {c['cpu']}, AVX-512 {c['avx512f']}, AVX512-BF16 {c['avx512_bf16']}, {amx}")
    for name, figures in c["frameworks"].items():
        print(
            f"  matmul 2048^3 through {name}: "
            # One decimal below 10: torch's bfloat16 on an AVX2-only CPU is 0.3 GFLOP/s, not "0".
            + ", ".join(f"{k} {v:.{0 if v >= 10 else 1}f} GFLOP/s" for k, v in figures.items() if k != "version")
        )
    print(f"  ceilings: float32 {c['float32_gflops']:.0f}, bfloat16 {c['bfloat16_gflops']:.0f} GFLOP/s")


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


def _timed(run):
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def time_batches(step, batches, passes=2):
    """Run every batch once untimed (tracing and compiling each shape), then time
    `passes` passes and keep the fastest (the machine is shared and noisy)."""
    warmup = _timed(lambda: [step(batch) for batch in batches])
    return min(_timed(lambda: [step(batch) for batch in batches]) for _ in range(passes)), warmup


def bench_fixed(clf, lengths, batch_size, n_batches, ceilings, train):
    """Fixed-shape forward passes: the frozen Gemma blocks alone (fused, and keras-hub's
    blocks for reference) and the classifier's scoring model (LoRA branches, pooling,
    head); then, optionally, a LoRA training step at length `train`."""
    import keras

    from kgemma.model.frozen_prefix import FrozenPrefix
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import training_model

    depth = clf.backbone.num_layers
    models = {
        "frozen forward, fused": FrozenPrefix(clf.backbone, depth, fused=True, int8=clf.frozen_int8),
        "frozen forward, keras-hub blocks": FrozenPrefix(clf.backbone, depth, fused=False),
        "scoring (predict_proba's model)": clf.scoring_model(),
    }
    rows = []
    n = batch_size * n_batches
    for length in lengths:
        batches = fixed_batches(length, batch_size, n_batches)
        flops = forward_flops(clf.backbone, [length] * n)
        for mode, model in models.items():
            seconds, warmup = time_batches(model.predict_on_batch, batches)
            gflops = flops / seconds / 1e9
            rows.append(
                {
                    "mode": mode,
                    "length": length,
                    "reviews_per_s": n / seconds,
                    "tokens_per_s": n * length / seconds,
                    "gflops": gflops,
                    "of_bfloat16_ceiling": gflops / ceilings["bfloat16_gflops"],
                    "of_float32_ceiling": gflops / ceilings["float32_gflops"],
                    "warmup_s": warmup,
                }
            )
    if train:
        model, _ = training_model(clf, TrainingConfig(jit_compile=clf.jit_compile), 1000)
        labels = np.arange(batch_size) % 2
        batches = fixed_batches(train, batch_size, n_batches)
        seconds, warmup = time_batches(lambda b: keras.Model.train_on_batch(model, b, labels), batches)
        rows.append(
            {
                "mode": "training",
                "length": train,
                "reviews_per_s": n / seconds,
                "tokens_per_s": n * train / seconds,
                "warmup_s": warmup,
            }
        )
    return rows


def ceiling_dtype(dtype):
    """The matmul ceiling a model of `dtype` is measured against, int8 frozen blocks
    or not: float32's for a float32 model, else bfloat16's."""
    from kgemma.model.dtypes import resolve_dtype

    return "float32" if resolve_dtype(dtype) == "float32" else "bfloat16"


def print_fixed(dtype, rows):
    ceiling = ceiling_dtype(dtype)
    for row in rows:
        extra = (
            f", {row['gflops']:.0f} GFLOP/s = {row[f'of_{ceiling}_ceiling']:.0%} of the {ceiling} ceiling"
            if "gflops" in row
            else ""
        )
        print(
            f"{dtype:>8} fixed {row['length']:>3} {row['mode']:<33}: {row['reviews_per_s']:6.2f} reviews/s, "
            f"{row['tokens_per_s']:5.0f} tokens/s{extra} (untimed first pass {row['warmup_s']:.0f} s)"
        )


def real_sample(data, n, seed):
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample

    return stratified_sample(load_imdb("test", data), n, seed=seed)


def bench_real(clf, reviews, batch_size, epochs, cache_prefix, train=True):
    """Inference and training on real review lengths: kgemma's length-sorted
    inference batches and length-bucketed training batches."""
    import keras

    from kgemma.model.batching import epoch_batches
    from kgemma.model.preprocessor import tokenize
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import model_inputs
    from kgemma.training.trainer import prefix_states
    from kgemma.training.trainer import training_model

    features = tokenize(clf.preprocessor, reviews.texts)
    lengths = features["padding_mask"].sum(axis=1)
    limit = features["token_ids"].shape[1]
    result = {
        "tokens_mean": float(lengths.mean()),
        "tokens_median": float(np.median(lengths)),
        "tokens_max": int(lengths.max()),
    }
    seconds, warmup = time_batches(lambda _: clf.logits_for_features(features, batch_size), [None])
    result["inference_reviews_per_s"] = len(reviews) / seconds
    result["inference_warmup_s"] = warmup
    if not train:
        return result

    config = TrainingConfig(
        lora_layers=clf.lora_layers, cache_prefix=cache_prefix, jit_compile=clf.jit_compile, batch_size=batch_size
    )
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
        command = [
            sys.executable,
            str(HERE / "peer.py"),
            "--texts",
            str(texts),
            "--output",
            str(out),
            "--max-length",
            str(args["max_length"]),
            "--batch-size",
            str(args["batch_size"]),
            "--fixed-length",
            "256",
            "--batches",
            str(args["batches"]),
            "--lora-layers",
            str(args["peer_lora_layers"] or 0),
            "--dtype",
            args["dtype"],
            "--order",
            args["order"],
        ]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


# The peer's modes: its base dtype, and "-grouped" for batches grouped by length.
PEER_MODES = "float32,bfloat16,bfloat16-grouped"
QUICK = {"sample": 16, "lengths": "256", "dtypes": "bfloat16", "lora_layers_options": "all", "batches": 2, "epochs": 1}


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="IMDB folder (test.jsonl.gz) or tfds.")
@click.option(
    "--sample", default=64, show_default=True, help="Seeded, stratified test reviews for the real-length runs."
)
@click.option(
    "--max-length", default=512, show_default=True, help="Sequence limit for the real-length runs, <bos> included."
)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--batches", default=3, show_default=True, help="Batches per fixed-length measurement.")
@click.option("--lengths", default="128,256,512", show_default=True, help="Fixed lengths for inference.")
@click.option("--dtypes", default="float32,bfloat16", show_default=True)
@click.option(
    "--lora-layers",
    "lora_layers_options",
    default="all,4",
    show_default=True,
    help="LoRA on all blocks and/or the top N: 'all,4'.",
)
@click.option(
    "--epochs", default=3, show_default=True, help="Epochs for the real-length training runs (the report's 3)."
)
@click.option("--jit-compile/--no-jit-compile", default=None, help="Force XLA on or off (default: Keras decides).")
@click.option(
    "--frozen-int8/--no-frozen-int8",
    default=None,
    help="kgemma's frozen projections as int8 matmuls (KERAS_BACKEND=torch): the fixed-length frozen forward, "
    "the prefix pass, training and scoring (LoRA branches and head stay float). Default: the classifier's own "
    "choice for this machine, as kgemma-train's.",
)
@click.option("--real/--no-real", default=True, show_default=True, help="Also time the real IMDB length distribution.")
@click.option("--peer/--no-peer", default=False, help="Also time the transformers + PEFT peer in the same run.")
@click.option(
    "--peer-modes",
    default=PEER_MODES,
    show_default=True,
    help="The peer's base dtypes; '-grouped' batches by length (sorted inference, group_by_length training).",
)
@click.option(
    "--quick",
    is_flag=True,
    help=(
        f"A check of a machine in under 3 minutes: {QUICK}, no fixed-shape training; prints the headline "
        "figures as JSON."
    ),
)
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write the figures as JSON.")
def main(
    data,
    sample,
    max_length,
    batch_size,
    batches,
    lengths,
    dtypes,
    lora_layers_options,
    epochs,
    jit_compile,
    frozen_int8,
    real,
    peer,
    peer_modes,
    quick,
    output,
):
    """Benchmark inference and LoRA training speed of the embedded model."""
    if quick:
        sample, lengths, dtypes, lora_layers_options, batches, epochs = (
            QUICK[k] for k in ("sample", "lengths", "dtypes", "lora_layers_options", "batches", "epochs")
        )
    results = {
        "settings": {
            "sample": sample,
            "max_length": max_length,
            "batch_size": batch_size,
            "epochs": epochs,
            "quick": quick,
        }
    }
    import keras

    results["machine"] = ceilings = machine_ceilings()
    print_ceilings(ceilings)
    reviews = real_sample(data, sample, seed=0)
    results["runs"] = []
    for dtype in dtypes.split(","):
        for option in lora_layers_options.split(","):
            lora_layers = None if option == "all" else int(option)
            clf = load_classifier(dtype, sequence_length=max_length, lora_layers=lora_layers, frozen_int8=frozen_int8)
            clf.compile(jit_compile="auto" if jit_compile is None else jit_compile)
            run = {
                "dtype": dtype,
                "lora_layers": option,
                "jit_compile": bool(clf.jit_compile),
                "backend": keras.backend.backend(),
                "frozen_int8": clf.frozen_int8,
            }
            if option == lora_layers_options.split(",")[0]:
                fixed_lengths = [int(x) for x in lengths.split(",")]
                run["fixed"] = bench_fixed(
                    clf, fixed_lengths, batch_size, batches, ceilings, train=None if quick else 256
                )
                print_fixed(dtype, run["fixed"])
            if real:
                run["real"] = real_run = bench_real(
                    clf, reviews, batch_size, epochs, cache_prefix=True, train=not quick
                )
                print_real(dtype, option, real_run, epochs)
            results["runs"].append(run)
            del clf
    results["peak_rss_mb"] = peak_rss_mb()
    print(f"peak memory (RSS) of the kgemma runs: {results['peak_rss_mb']:.0f} MB")
    if peer and real:
        results["peer"] = {}
        for mode in peer_modes.split(","):
            peer_dtype, _, grouped = mode.partition("-")
            for option in lora_layers_options.split(","):
                args = {
                    "max_length": max_length,
                    "batch_size": batch_size,
                    "batches": batches,
                    "dtype": peer_dtype,
                    "order": grouped or "given",
                    "peer_lora_layers": None if option == "all" else int(option),
                }
                results["peer"][f"{mode}/{option}"] = p = run_peer(reviews, args)
                print(
                    f"    peer {mode:>16} lora={option:<3} fixed 256: "
                    f"inference {p['fixed_inference_reviews_per_s']:.2f}, "
                    f"training {p['fixed_training_reviews_per_s']:.2f} reviews/s; "
                    f"real lengths: inference {p['real_inference_reviews_per_s']:.2f}, "
                    f"training {p.get('real_training_reviews_per_s', 0):.2f} reviews/s; "
                    f"peak RSS {p['peak_rss_mb']:.0f} MB"
                )
        results["ratios"] = ratios(results, epochs)
        print_ratios(results["ratios"])
    if quick:
        print(json.dumps(headline(results), indent=2))
    if output:
        Path(output).write_text(json.dumps(results, indent=2))


def print_real(dtype, option, real_run, epochs):
    line = (
        f"{dtype:>8} lora={option:<3} real lengths (mean {real_run['tokens_mean']:.0f} tokens): "
        f"inference {real_run['inference_reviews_per_s']:.2f} reviews/s"
    )
    if "training_first_epoch_reviews_per_s" in real_run:
        line += (
            f"; training {real_run['training_first_epoch_reviews_per_s']:.2f} reviews/s (1st epoch), "
            f"{real_run[f'training_{epochs}_epochs_reviews_per_s']:.2f} over {epochs} epochs"
        )
    print(line)


def ratios(results, epochs):
    """kgemma's real-length reviews/s over each peer mode's, same LoRA layers."""
    rows = []
    for run in results["runs"]:
        for key, p in results["peer"].items():
            mode, option = key.split("/")
            if option != run["lora_layers"] or "real" not in run:
                continue
            real = run["real"]
            row = {
                "kgemma": run["dtype"],
                "peer": mode,
                "lora_layers": option,
                "inference": real["inference_reviews_per_s"] / p["real_inference_reviews_per_s"],
            }
            if "training_first_epoch_reviews_per_s" in real:
                row["training_1_epoch"] = real["training_first_epoch_reviews_per_s"] / p["real_training_reviews_per_s"]
                row[f"training_{epochs}_epochs"] = (
                    real[f"training_{epochs}_epochs_reviews_per_s"] / p["real_training_reviews_per_s"]
                )
            rows.append(row)
    return rows


def print_ratios(rows):
    print(
        "\nkgemma / peer on real IMDB lengths (same reviews, same sequence limit, LoRA r8/alpha16 on q,v, same layers):"
    )
    for row in rows:
        figures = ", ".join(
            f"{k.replace('_', ' ')} x{v:.2f}" for k, v in row.items() if k not in ("kgemma", "peer", "lora_layers")
        )
        print(
            f"  kgemma {row['kgemma']:>8} / peer {row['peer']:>16}, LoRA on {row['lora_layers']:>3} blocks: {figures}"
        )


def headline(results):
    """The figures a machine check needs: ceilings, the frozen forward's share of the
    bfloat16 ceiling, scoring and real-length inference speed."""
    machine = results["machine"]
    out = {
        "cpu": machine["cpu"],
        "amx_bf16": machine["amx_bf16"],
        "avx512_bf16": machine["avx512_bf16"],
        "bfloat16_ceiling_gflops": round(machine["bfloat16_gflops"]),
        "float32_ceiling_gflops": round(machine["float32_gflops"]),
    }
    for run in results["runs"]:
        out.update(backend=run["backend"], frozen_int8=run["frozen_int8"])
        for row in run.get("fixed", []):
            if "gflops" in row:
                key = (
                    f"{run['dtype']}_{row['length']}_{row['mode'].split(' (')[0].replace(', ', '_').replace(' ', '_')}"
                )
                out[key] = {
                    "reviews_per_s": round(row["reviews_per_s"], 2),
                    "of_bfloat16_ceiling": round(row["of_bfloat16_ceiling"], 3),
                }
        if "real" in run:
            out[f"{run['dtype']}_real_inference_reviews_per_s"] = round(run["real"]["inference_reviews_per_s"], 2)
    return out


if __name__ == "__main__":
    main()

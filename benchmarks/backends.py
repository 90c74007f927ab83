"""The frozen Gemma forward on each Keras backend, and in int8 on torch (issue 20).

Each (backend, mode) runs in its own process (`KERAS_BACKEND` is fixed per process,
and no two thread pools meet): the embedded Gemma 3 270M's frozen forward through
kgemma's fused blocks, at fixed lengths, in each mode's dtype; GFLOP/s against this machine's
matmul ceiling in that dtype (benchmarks/ceilings.py, the best of any framework; int8 against
the ceiling of the float dtype its model runs in). With
`--adapter`, each mode also scores a seeded, stratified sample of IMDB test reviews
with that adapter, so int8's cost in accuracy and agreement is measured beside its speed.

    python benchmarks/backends.py --data ../shared/data/imdb
    python benchmarks/backends.py --data ../shared/data/imdb --adapter runs/E1/adapter.npz --sample 500

Prints figures (and writes them as JSON with --output); it asserts nothing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np

# (Keras backend, matmul mode): every backend in bfloat16, and torch's int8; float32 too on CPUs
# without bfloat16 matrix units.
MODES = "tensorflow:bfloat16,jax:bfloat16,torch:bfloat16,torch:int8"


def mode_dtype(mode):
    """The model's dtype in a mode: int8 projections run on the fastest float model
    here (`"auto"`: bfloat16 where the CPU has bfloat16 units, else float32) for its
    norms, attention and adapters."""
    return "auto" if mode == "int8" else mode


def measure_mode(mode, lengths, batch_size, batches, data, adapter, sample):
    """In a process of one Keras backend: time the frozen forward, score the sample."""
    import keras
    from speed import fixed_batches
    from speed import forward_flops
    from speed import time_batches

    from kgemma import GemmaSentimentClassifier
    from kgemma.model.frozen_prefix import FrozenPrefix

    int8 = mode == "int8"
    dtype = mode_dtype(mode)
    keras.utils.set_random_seed(0)
    if adapter:
        clf = GemmaSentimentClassifier.from_adapter(adapter, dtype=dtype)
    else:
        clf = GemmaSentimentClassifier.from_preset(dtype=dtype)
    # All the blocks, as speed.py times them (an adapter's own prefix stops at its first adapted block).
    prefix = FrozenPrefix(clf.backbone, clf.backbone.num_layers, fused=True, int8=int8)
    result = {"backend": keras.backend.backend(), "mode": mode, "forward": []}
    for length in lengths:
        feeds = fixed_batches(length, batch_size, batches)
        seconds, warmup = time_batches(prefix.predict_on_batch, feeds)
        n = batch_size * batches
        flops = forward_flops(clf.backbone, [length] * n)
        result["forward"].append(
            {"length": length, "reviews_per_s": n / seconds, "gflops": flops / seconds / 1e9, "warmup_s": warmup}
        )
    if adapter:
        from kgemma.data import load_imdb
        from kgemma.data import stratified_sample
        from kgemma.model.preprocessor import tokenize

        reviews = stratified_sample(load_imdb("test", data), sample, seed=0)
        features = tokenize(clf.preprocessor, reviews.texts)
        logits = clf.logits_for_features(features, batch_size=batch_size, int8=int8)
        result["scores"] = {
            "predicted": logits.argmax(axis=1).tolist(),
            "logits": logits.tolist(),
            "labels": reviews.labels.tolist(),
        }
    return result


def run_mode(backend, mode, args):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {
            "backend": backend,
            "mode": mode,
            "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_results(ceilings, results, reference):
    from speed import ceiling_dtype

    for r in results:
        kind = ceiling_dtype(mode_dtype(r["mode"]))
        ceiling = ceilings[f"{kind}_gflops"]
        label = f"{r['backend']:>10} {r['mode']:<8}"
        if "error" in r:
            print(f"{label}: failed: {r['error']}")
            continue
        for f in r["forward"]:
            print(
                f"{label} frozen forward, 8 x {f['length']}: {f['reviews_per_s']:6.2f} reviews/s, "
                f"{f['gflops']:4.0f} GFLOP/s = {f['gflops'] / ceiling:.0%} of the {kind} ceiling (first pass "
                f"{f['warmup_s']:.0f} s)"
            )
        if "scores" in r:
            s = r["scores"]
            accuracy = float(np.mean(np.asarray(s["predicted"]) == np.asarray(s["labels"])))
            line = f"{label} test-sample accuracy {accuracy:.1%} ({len(s['labels'])} reviews)"
            if reference is not None and r is not reference:
                agree = float(np.mean(np.asarray(s["predicted"]) == np.asarray(reference["scores"]["predicted"])))
                gap = float(np.abs(np.asarray(s["logits"]) - np.asarray(reference["scores"]["logits"])).max())
                line += (
                    f"; agrees with {reference['backend']} {reference['mode']} on {agree:.1%}, logits within {gap:.3f}"
                )
            print(line)


@click.command()
@click.option(
    "--data", default="../shared/data/imdb", show_default=True, help="IMDB folder or tfds (for --adapter's sample)."
)
@click.option(
    "--modes", default=MODES, show_default=True, help="BACKEND:MODE,...; MODE is float32, bfloat16 or int8 (torch)."
)
@click.option("--lengths", default="256,512", show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--batches", default=3, show_default=True, help="Batches per length.")
@click.option(
    "--adapter",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A trained adapter: score the test sample in every mode.",
)
@click.option("--sample", default=500, show_default=True, help="Test reviews scored with --adapter.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write the figures as JSON.")
@click.option("--worker", default=None, hidden=True)
def main(data, modes, lengths, batch_size, batches, adapter, sample, output, worker):
    lengths = [int(x) for x in lengths.split(",")]
    if worker:
        print(json.dumps(measure_mode(worker, lengths, batch_size, batches, data, adapter, sample)))
        return
    from speed import machine_ceilings
    from speed import print_ceilings

    ceilings = machine_ceilings()
    print_ceilings(ceilings)
    args = [
        "--data",
        data,
        "--lengths",
        ",".join(map(str, lengths)),
        "--batch-size",
        str(batch_size),
        "--batches",
        str(batches),
        "--sample",
        str(sample),
    ]
    if adapter:
        args += ["--adapter", adapter]
    results = []
    for pair in modes.split(","):
        backend, mode = pair.split(":")
        results.append(run_mode(backend, mode, args))
    # The first scored mode is the one the others are compared with.
    reference = next((r for r in results if "scores" in r), None)
    print_results(ceilings, results, reference)
    if output:
        Path(output).write_text(json.dumps({"ceilings": ceilings, "results": results}, indent=1))


if __name__ == "__main__":
    main()

"""Multi-worker training and sharded evaluation on one host, against one process.

    python benchmarks/multi_worker.py --data ../shared/data/imdb --output runs/bench-mw

Trains the embedded model with `make demo`'s settings (dropout off, so that the runs
can be compared weight for weight) once in one process and once as `--workers`
processes through `kgemma-launch` (TensorFlow's MultiWorkerMirroredStrategy on
127.0.0.1), then evaluates the first run's adapter in one process and in `--workers`
shards merged. Prints, and writes to OUTPUT/multi_worker.json, the wall times, the
training seconds, both runs' validation figures, the largest difference between their
weights, and both evaluations' accuracy. Run it on a quiet machine: the workers share
its cores (`kgemma-launch` gives each cores / workers threads).
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

DEMO_TRAINING = [
    *("--max-examples", "400", "--epochs", "1", "--sequence-length", "128"),
    *("--learning-rate", "5e-4", "--schedule", "cosine", "--warmup-steps", "10", "--no-save-keras"),
    *("--dropout", "0", "--lora-dropout", "0", "--quiet"),
]


def command(name):
    """A kgemma console script beside this interpreter."""
    return str(Path(sys.executable).with_name(name))


def timed(args, log):
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise click.ClickException(f"{' '.join(args)} failed with code {code}; see {log}.")
    return round(time.perf_counter() - started, 1)


def training_figures(folder, seconds):
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "wall_seconds": seconds,
        "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "validation": summary["best_validation"],
        "distribution": summary["distribution"],
    }


def largest_difference(a, b):
    with np.load(a) as x, np.load(b) as y:
        names = [k for k in x.files if not k.startswith("__")]
        return max(float(np.abs(x[k].astype(np.float64) - y[k].astype(np.float64)).max()) for k in names)


@click.command()
@click.option("--data", "data_source", default="../shared/data/imdb", show_default=True)
@click.option("--output", "output_dir", default="runs/bench-mw", show_default=True, type=click.Path(file_okay=False))
@click.option("--workers", default=2, show_default=True)
@click.option("--eval-examples", default=400, show_default=True)
def main(data_source, output_dir, workers, eval_examples):
    """Time training and evaluation in one process and in --workers processes."""
    out = Path(output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    launch = [command("kgemma-launch"), "--workers", str(workers), "--"]
    train = [command("kgemma-train"), "--data", data_source, *DEMO_TRAINING]
    one = timed([*train, "--output", str(out / "one")], out / "one.log")
    many = timed(
        [*launch, *train, "--distribution", "data", "--multi-worker", "--output", str(out / "many")], out / "many.log"
    )

    evaluate = [command("kgemma-eval"), "--data", data_source, "--max-examples", str(eval_examples), "--format", "json"]
    adapter = ["--adapter", str(out / "one" / "adapter.npz")]
    eval_one = timed([*evaluate, *adapter, "--output", str(out / "eval-one")], out / "eval-one.log")
    shards = timed(
        [*launch, *evaluate, *adapter, "--shard", "{worker}/{workers}", "--output", str(out / "eval-{worker}")],
        out / "eval-shards.log",
    )
    merges = [a for i in range(workers) for a in ("--merge", str(out / f"eval-{i}"))]
    merge = timed([*evaluate, *merges, "--output", str(out / "eval-merged")], out / "eval-merge.log")
    accuracy = {
        name: json.loads((out / name / "metrics.json").read_text())["overall"]["accuracy"]
        for name in ("eval-one", "eval-merged")
    }
    figures = {
        "workers": workers,
        "training": {
            "one_process": training_figures(out / "one", one),
            "workers": training_figures(out / "many", many),
            "largest_weight_difference": largest_difference(out / "one" / "adapter.npz", out / "many" / "adapter.npz"),
        },
        "evaluation": {
            "reviews": eval_examples,
            "one_process": {"wall_seconds": eval_one, "accuracy": accuracy["eval-one"]},
            "shards": {"wall_seconds": shards, "merge_wall_seconds": merge, "accuracy": accuracy["eval-merged"]},
        },
    }
    (out / "multi_worker.json").write_text(json.dumps(figures, indent=2))
    click.echo(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

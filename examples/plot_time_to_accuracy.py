"""Plot test-sample accuracy against training minutes for finished runs, and print
each run's row of docs/results.md's table.

    python examples/plot_time_to_accuracy.py runs/A runs/B ... --output docs/time_to_accuracy.png

Each run folder needs kgemma-train's `summary.json` and kgemma-eval's `eval/metrics.json`.
Training minutes are the summary's `train_seconds`: training steps plus the frozen-prefix
pass, without model loading. Runs whose folder name starts with the same word as
`--highlight` (default `cpu`; several, comma-separated: `E4,F2`) are joined by a line: one
recipe at several budgets.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SLICES = ("negation", "mixed", "sarcasm_cues", "borderline_rating", "short", "truncated")


def read_run(run_dir):
    """The run's training summary and its evaluation metrics."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, json.loads((run_dir / "eval" / "metrics.json").read_text())


def run_point(run_dir):
    """(minutes, accuracy, (low, high), test rows) of one evaluated run."""
    summary, metrics = read_run(run_dir)
    overall = metrics["overall"]
    return summary["train_seconds"] / 60, overall["accuracy"], overall["accuracy_ci95"], overall["n"]


def table_row(run_dir):
    """The run's figures as docs/results.md's columns (the settings column is the reader's)."""
    summary, metrics = read_run(run_dir)
    overall, best = metrics["overall"], summary["best_validation"]
    low, high = overall["accuracy_ci95"]
    slices = " / ".join(f"{100 * metrics['slices'][name]['accuracy']:.1f}" for name in SLICES)
    # The bar: no slice below the TF-IDF baseline on the same slice.
    under = [
        f"{name} {100 * s['accuracy']:.1f} < {100 * s['baseline_accuracy']:.1f}"
        for name, s in metrics["slices"].items()
        if s.get("baseline_accuracy") is not None and s["accuracy"] < s["baseline_accuracy"]
    ]
    return (
        f"| {run_dir.name} | {summary['train_seconds'] / 60:.1f} min | {summary['reviews_trained']:,} | "
        f"{best['loss']:.3f} / {best['accuracy']:.1%} ({summary['data']['validation']:,}) | {overall['n']:,} | "
        f"{overall['accuracy']:.1%} [{low:.1%}, {high:.1%}] | {overall['roc_auc']:.3f} | {slices} | "
        f"{metrics['baseline']['overall']['accuracy']:.1%} | {', '.join(under) or 'none'} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument(
        "--highlight", default="cpu", help="Folder-name prefixes of the recipe's runs, comma-separated."
    )
    parser.add_argument("--label", default=None, help="Legend for the highlighted runs (default: --recipe HIGHLIGHT).")
    parser.add_argument("--output", default="time_to_accuracy.png")
    args = parser.parse_args()

    fig, ax = plt.subplots(figsize=(7, 4.2))
    recipe = []
    for run_dir in args.runs:
        minutes, accuracy, (low, high), n = run_point(run_dir)
        highlighted = run_dir.name.startswith(tuple(args.highlight.split(",")))
        color = "tab:blue" if highlighted else "tab:gray"
        ax.errorbar(
            minutes,
            100 * accuracy,
            yerr=[[100 * (accuracy - low)], [100 * (high - accuracy)]],
            fmt="o",
            color=color,
            capsize=3,
        )
        ax.annotate(
            f"{run_dir.name} (n={n})",
            (minutes, 100 * accuracy),
            textcoords="offset points",
            xytext=(5, -12),
            fontsize=8,
        )
        if highlighted:
            recipe.append((minutes, 100 * accuracy))
        print(table_row(run_dir))
    if recipe:
        ax.plot(*zip(*sorted(recipe)), "-", color="tab:blue", label=args.label or f"--recipe {args.highlight}")
    for target, minutes in ((90, 10), (94, 60)):
        ax.plot([minutes, minutes, 0], [80, target, target], ":", color="tab:red", lw=1)
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("test-sample accuracy, % (95% CI)")
    ax.set_xlim(left=0)
    ax.set_ylim(80, 96)
    ax.grid(alpha=0.3)
    if recipe:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

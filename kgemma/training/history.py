"""Per-step and per-epoch training history, saved as JSON, CSV and a learning-curve PNG."""

import csv
import io
import json
from pathlib import Path

from kgemma.files import read_json
from kgemma.files import save_text_atomically

STEP_FIELDS = ("global_step", "epoch", "step", "reviews", "loss", "accuracy", "learning_rate", "reviews_per_s")
EPOCH_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


class History:
    """What a run recorded; `steps` and `epochs` are lists of dicts."""

    def __init__(self, steps=None, epochs=None):
        self.steps = list(steps or [])
        self.epochs = list(epochs or [])

    @classmethod
    def load(cls, run_dir, up_to_step=None, epochs_done=None):
        """The history saved in `run_dir`, trimmed to the last checkpoint: its
        `up_to_step` steps and `epochs_done` finished epochs (the history is written
        just before the checkpoint, so it can be a step or an epoch ahead)."""
        path = Path(run_dir) / "history.json"
        if not path.is_file():
            return cls()
        data = read_json(path)
        steps = [s for s in data["steps"] if up_to_step is None or s["global_step"] <= up_to_step]
        epochs = [e for e in data["epochs"] if epochs_done is None or e["epoch"] < epochs_done]
        return cls(steps, epochs)

    def epoch_steps(self, epoch):
        return [s for s in self.steps if s["epoch"] == epoch]

    def save(self, run_dir):
        # Atomically, like the checkpoint beside it: a torn history would break --resume.
        run_dir = Path(run_dir)
        save_text_atomically(
            run_dir / "history.json", json.dumps({"steps": self.steps, "epochs": self.epochs}, indent=1)
        )
        for name, fields, rows in (
            ("history_steps.csv", STEP_FIELDS, self.steps),
            ("history_epochs.csv", EPOCH_FIELDS, self.epochs),
        ):
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            save_text_atomically(run_dir / name, text.getvalue())

    def plot(self, path):
        """Training loss and accuracy per step (smoothed) with validation per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        steps = [s["global_step"] for s in self.steps]
        per_epoch = max((len(self.epoch_steps(e["epoch"])) for e in self.epochs), default=0)
        for ax, key in zip(axes, ("loss", "accuracy")):
            values = [s[key] for s in self.steps]
            ax.plot(steps, values, color="tab:blue", alpha=0.25, lw=0.8, label=f"train {key} (step)")
            ax.plot(steps, _running_mean(values, 20), color="tab:blue", label=f"train {key} (mean of 20)")
            if self.epochs:
                ends = [(e["epoch"] + 1) * per_epoch for e in self.epochs]
                ax.plot(
                    ends, [e[f"val_{key}"] for e in self.epochs], "o-", color="tab:orange", label=f"validation {key}"
                )
            ax.set_xlabel("training step")
            ax.set_title(key)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def _running_mean(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out

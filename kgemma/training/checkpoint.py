"""Resumable training state: trainable weights, optimizer state and progress.

Written atomically (a scratch file renamed over the old one), so a run killed at
any moment, even mid-write, leaves the previous checkpoint intact. The frozen
backbone is not in it: a checkpoint of the 270M model at rank 8 is a few MB.
"""

import json

import numpy as np

from kgemma.files import save_npz_atomically

_PROGRESS = "__progress__"


def save_state(path, model, progress, best_weights=None):
    arrays = {f"weight/{i}": np.asarray(w.numpy()) for i, w in enumerate(model.trainable_weights)}
    arrays.update({f"optimizer/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    for i, value in enumerate(best_weights or []):
        arrays[f"best/{i}"] = value
    arrays[_PROGRESS] = np.frombuffer(json.dumps(progress).encode(), dtype=np.uint8)
    save_npz_atomically(path, arrays)


def load_state(path, model):
    """Restore weights and optimizer state into `model`; return `(progress, best_weights)`."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    progress = json.loads(arrays.pop(_PROGRESS).tobytes().decode())
    weights = model.trainable_weights
    if sum(k.startswith("weight/") for k in arrays) != len(weights):
        raise ValueError(f"{path} was written for a different model (trainable weights differ).")
    for i, w in enumerate(weights):
        w.assign(arrays[f"weight/{i}"])
    if not model.optimizer.built:
        model.optimizer.build(weights)
    for i, v in enumerate(model.optimizer.variables):
        v.assign(arrays[f"optimizer/{i}"])
    best = [arrays[f"best/{i}"] for i in range(len(weights))] if "best/0" in arrays else None
    return progress, best

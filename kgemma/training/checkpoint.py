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
    # Keyed by variable path, not position: the order of `trainable_weights` is an
    # implementation detail of Keras's tracking (it differs between versions of kgemma).
    arrays = {f"weight/{w.path}": np.asarray(w.numpy()) for w in model.trainable_weights}
    arrays.update({_optimizer_key(v): np.asarray(v.numpy()) for v in model.optimizer.variables})
    for i, value in enumerate(best_weights or []):
        arrays[f"best/{i}"] = value
    arrays[_PROGRESS] = np.frombuffer(json.dumps(progress).encode(), dtype=np.uint8)
    save_npz_atomically(path, arrays)


def _optimizer_key(variable):
    # Without the optimizer's own name, which Keras numbers per process ("adam_w_1").
    return "optimizer/" + variable.path.split("/", 1)[-1]


def load_state(path, model):
    """Restore weights and optimizer state into `model`; return `(progress, best_weights)`."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    progress = json.loads(arrays.pop(_PROGRESS).tobytes().decode())
    weights = model.trainable_weights
    if not model.optimizer.built:
        model.optimizer.build(weights)
    expected = {f"weight/{w.path}" for w in weights} | {_optimizer_key(v) for v in model.optimizer.variables}
    saved = {k for k in arrays if k.startswith(("weight/", "optimizer/"))}
    if saved != expected:
        raise ValueError(f"{path} was written for a different model (trainable weights differ).")
    for w in weights:
        w.assign(arrays[f"weight/{w.path}"])
    for v in model.optimizer.variables:
        v.assign(arrays[_optimizer_key(v)])
    best = [arrays[f"best/{i}"] for i in range(len(weights))] if "best/0" in arrays else None
    return progress, best

"""The frozen prefix's states, kept on disk between runs and memory-mapped.

Runs that share a frozen prefix compute the same states: the same base weights, dtype,
split depth and block implementation, and the same token ids (which already hold the
texts, the sequence length and the truncation). `cached_prefix_states` computes them
once into `DIR/<key>/` and later runs map that file instead, so the states of 22,500
reviews at 512 tokens (about 8 GB in bfloat16) never need to fit in memory. A run that
reads the cache still counts the seconds the prefix pass took when the entry was made,
so training times stay comparable (`PrefixStates.seconds`).
"""

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from kgemma.files import read_json
from kgemma.files import save_text_atomically
from kgemma.model.backbones import backbone_fingerprint

logger = logging.getLogger(__name__)

STATES = "states.npy"
RECORD = "prefix.json"


class PrefixStates:
    """Per-review states of a frozen prefix in one flat `(tokens, hidden)` array.

    `states[i]` is review `i`'s `(length_i, hidden)` states, a view of the flat
    array (memory-mapped when it comes from disk).

    Args:
        flat: `(sum of lengths, hidden)` array.
        lengths: each review's number of tokens, in row order.
        seconds: how long the prefix pass that made the states took.
    """

    def __init__(self, flat, lengths, seconds=0.0):
        self.flat = flat
        self.lengths = np.asarray(lengths, dtype="int64")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.seconds = float(seconds)
        if len(flat) != self.offsets[-1]:
            raise ValueError(f"Prefix states hold {len(flat)} tokens, the lengths {self.offsets[-1]}.")

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return self.flat[self.offsets[i] : self.offsets[i + 1]]


def cache_key(classifier, features, depth, fused, int8=False):
    """A hex key for the prefix's states of these token ids (see the module docstring)."""
    import keras

    settings = {
        "base_model": backbone_fingerprint(classifier.backbone),
        "dtype": classifier.backbone.dtype_policy.name,
        "depth": int(depth),
        "fused": bool(fused),
        "backend": keras.backend.backend(),
    }
    if int8:  # Only when set: the keys of float prefixes stay as they were.
        settings["int8"] = True
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in ("token_ids", "padding_mask"):
        digest.update(np.ascontiguousarray(features[name], dtype="int32").tobytes())
    return digest.hexdigest()[:24]


def storage_dtype(dtype):
    """numpy's `.npy` format has no bfloat16: keep its raw 16 bits."""
    dtype = np.dtype(dtype)
    return np.dtype("uint16") if dtype.name == "bfloat16" else dtype


def load_entry(folder, lengths, dtype):
    """The states saved in `folder`, memory-mapped, or None if it is missing or
    does not match these reviews (a damaged entry is logged and ignored)."""
    folder = Path(folder)
    if not (folder / RECORD).is_file():
        return None
    try:
        record = read_json(folder / RECORD)
        flat = np.load(folder / STATES, mmap_mode="r")
        if record["dtype"] != np.dtype(dtype).name or not np.array_equal(record["lengths"], lengths):
            raise ValueError("its reviews or dtype differ from this run's")
        return PrefixStates(flat.view(np.dtype(dtype)), lengths, record["seconds"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Ignoring the prefix cache entry %s (%s); computing it again.", folder, error)
        return None


def save_entry(folder, fill, lengths, hidden, dtype, settings):
    """Compute states with `fill(flat)` straight into a new memory-mapped entry,
    then publish it with one rename, so a killed run leaves no half-written entry."""
    folder = Path(folder)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        raw = np.lib.format.open_memmap(
            partial / STATES, mode="w+", dtype=storage_dtype(dtype), shape=(int(np.sum(lengths)), hidden)
        )
        started = time.perf_counter()
        fill(raw.view(np.dtype(dtype)))
        seconds = time.perf_counter() - started
        raw.flush()
        del raw
        record = {**settings, "dtype": np.dtype(dtype).name, "lengths": [int(n) for n in lengths], "seconds": seconds}
        save_text_atomically(partial / RECORD, json.dumps(record))
        try:
            partial.rename(folder)
        except OSError:  # Another run published the same entry first; theirs serves.
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return load_entry(folder, lengths, dtype)


def cached_prefix_states(cache_dir, key, settings, lengths, hidden, dtype, fill):
    """`PrefixStates` for entry `key` of `cache_dir`: mapped from disk when there,
    else computed by `fill(flat)` into a new entry (which replaces a damaged one).

    Args:
        cache_dir: the cache folder (created when missing).
        key: the entry's key (`cache_key`).
        settings: JSON-able settings recorded beside the states, for people.
        lengths: each review's number of tokens.
        hidden: the states' width.
        dtype: the states' numpy dtype.
        fill: a function that writes every review's states into a flat array.
    """
    folder = Path(cache_dir) / key
    entry = load_entry(folder, lengths, dtype)
    if entry is not None:
        return entry
    shutil.rmtree(folder, ignore_errors=True)
    return save_entry(folder, fill, lengths, hidden, dtype, settings)

"""Writing files so that a crash never leaves a half-written one in place."""

import os
import tempfile
from pathlib import Path

import numpy as np


def save_npz_atomically(path, arrays):
    """Write `arrays` to `path` as `.npz` via a scratch file renamed over the target,
    so an existing file is replaced only by a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    return path

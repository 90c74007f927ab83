"""Writing files so that a crash never leaves a half-written one in place, and
checksums to tell a complete file from a damaged one."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _default_mode():
    """What `open()` would give a new file under the current umask (mkstemp's 0600
    would make these files unlike every other output)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomically(path, write, mode="wb"):
    """Call `write(file)` on a scratch file beside `path`, then rename it over `path`,
    so an existing file is replaced only by a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(scratch, _default_mode())
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    return path


def save_npz_atomically(path, arrays):
    """Write `arrays` to `path` as `.npz`, atomically."""
    return _write_atomically(path, lambda f: np.savez(f, **arrays))


def save_text_atomically(path, text):
    """Write `text` to `path` (UTF-8), atomically."""
    return _write_atomically(path, lambda f: f.write(text), mode="w")


def read_json(path):
    """Parse a JSON file; a damaged one is an error that names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged (not valid JSON: {e}); delete it or restore it from a backup.") from None


def sha256_of_file(path, block_size=1 << 20):
    """The file's sha256 as hex, read in blocks (a gigabyte never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(folder, skip=()):
    """`{relative path: sha256}` of every file under `folder`, except names in `skip`."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip)
    return {str(p.relative_to(folder)): sha256_of_file(p) for p in files}

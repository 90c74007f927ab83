"""Loading IMDB from wherever it is: tensorflow-datasets, an aclImdb folder, JSONL/CSV."""

import os
from pathlib import Path

from kgemma.data.readers import load_tfds_imdb
from kgemma.data.readers import read_aclimdb
from kgemma.data.readers import read_reviews

IMDB_ENV = "KGEMMA_IMDB_DIR"
SPLITS = ("train", "test")


def default_imdb_source():
    """`$KGEMMA_IMDB_DIR` when set (offline copies), else `None` for tensorflow-datasets."""
    return os.environ.get(IMDB_ENV) or None


def is_single_file(source):
    """Whether `source` is one labelled file (it is then every split) rather than an IMDB source."""
    return source not in (None, "tfds") and Path(source).expanduser().is_file()


def _split_file(folder, split):
    for name in (f"{split}.jsonl.gz", f"{split}.jsonl", f"{split}.csv.gz", f"{split}.csv", f"{split}.tsv"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_imdb(split="train", source=None, data_dir=None, **fields):
    """Load an IMDB split as `Reviews`.

    Args:
        split: `"train"` or `"test"`.
        source: `None` or `"tfds"` for tensorflow-datasets' `imdb_reviews`; a folder
            holding the official `aclImdb/` layout (or `aclImdb/` itself); a folder
            holding `{split}.jsonl.gz`/`.jsonl`/`.csv` (like `../shared/data/imdb`);
            or a single labelled `.jsonl`/`.csv`/`.tsv` file.
        data_dir: tensorflow-datasets' data directory.
        **fields: column names for JSONL/CSV (`text_field`, `label_field`, ...).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if source in (None, "tfds"):
        return load_tfds_imdb(split, data_dir=data_dir)
    path = Path(source).expanduser()
    if path.is_file():
        return read_reviews(path, **fields)
    if not path.is_dir():
        raise FileNotFoundError(f"IMDB source not found: {path}")
    for root in (path, path / "aclImdb"):
        if (root / split / "pos").is_dir():
            return read_aclimdb(root, split)
    split_file = _split_file(path, split)
    if split_file is None:
        raise FileNotFoundError(
            f"{path} holds neither an aclImdb/{split} folder nor a {split}.jsonl(.gz) or {split}.csv file."
        )
    return read_reviews(split_file, **fields)

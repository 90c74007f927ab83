"""Readers for labelled review files: JSONL, CSV/TSV, the aclImdb folder, tfds."""

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np

from kgemma.data.reviews import LABEL_NAMES
from kgemma.data.reviews import UNKNOWN_RATING
from kgemma.data.reviews import Reviews

_LABEL_ALIASES = {"neg": "negative", "pos": "positive", "0": "negative", "1": "positive"}


def parse_label(value, label_names=LABEL_NAMES):
    """A class id from an int id, a label name (any case) or `pos`/`neg`."""
    if isinstance(value, bool):
        raise ValueError(f"unknown label {value!r}")
    if isinstance(value, (int, np.integer)) and 0 <= value < len(label_names):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return parse_label(int(value), label_names)
    if isinstance(value, str):
        name = value.strip().lower()
        name = _LABEL_ALIASES.get(name, name) if label_names == LABEL_NAMES else name
        lowered = [n.lower() for n in label_names]
        if name in lowered:
            return lowered.index(name)
        if name.isdigit():
            return parse_label(int(name), label_names)
    raise ValueError(f"unknown label {value!r} (expected an id below {len(label_names)} or one of {list(label_names)})")


def _open_text(path):
    """Open a file, gunzipping `.gz`, as bytes (decoded line by line to report bad UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: {path}")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _decoded_lines(path):
    number = 0
    f = _open_text(path)  # A missing file is a FileNotFoundError of its own, not a damaged one.
    try:
        with f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path}, line {number}: not valid UTF-8 ({e.reason} at byte {e.start})."
                    ) from None
    except (OSError, EOFError) as e:  # gzip's BadGzipFile is an OSError; a cut-off .gz ends in EOFError.
        raise ValueError(f"{path}: damaged or not a gzip file after line {number} ({type(e).__name__}).") from None


def _finish(path, texts, labels, ids, ratings, label_names):
    if not texts:
        raise ValueError(f"{path} holds no reviews.")
    return Reviews(texts, labels, ids, ratings, source=str(path), label_names=tuple(label_names))


def _rating(value, where):
    """A star rating, or `UNKNOWN_RATING` when the row has none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return UNKNOWN_RATING
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: rating {value!r} is not a whole number.") from None


def read_jsonl(
    path, text_field="text", label_field="label", id_field="id", rating_field="rating", label_names=LABEL_NAMES
):
    """Read one JSON object a line (plain or `.gz`); blank lines are skipped."""
    texts, labels, ids, ratings = [], [], [], []
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{where}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a {type(row).__name__}, not a JSON object.")
        for name in (text_field, label_field):
            if name not in row:
                raise ValueError(f"{where}: no '{name}' field (fields: {sorted(row)}).")
        if not isinstance(row[text_field], str):
            raise ValueError(f"{where}: '{text_field}' is not a string.")
        try:
            labels.append(parse_label(row[label_field], label_names))
        except ValueError as e:
            raise ValueError(f"{where}: {e}.") from None
        ratings.append(_rating(row.get(rating_field), where))
        texts.append(row[text_field])
        ids.append(str(row.get(id_field, number)))
    return _finish(path, texts, labels, ids, ratings, label_names)


def read_csv(
    path,
    text_field="text",
    label_field="label",
    id_field="id",
    rating_field="rating",
    label_names=LABEL_NAMES,
    delimiter=None,
):
    """Read a CSV or TSV file with a header row (delimiter from the extension by default)."""
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if ".tsv" in path.suffixes else ","
    lines = (line for _, line in _decoded_lines(path))
    # TSV releases (e.g. IMDb contrast sets) keep quotes inside the text unescaped.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(lines, delimiter=delimiter, quoting=quoting)
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        columns = reader.fieldnames
    except csv.Error as e:
        raise ValueError(f"{path}, line 1: not readable as {kind} ({e}).") from None
    missing = [f for f in (text_field, label_field) if f not in (columns or [])]
    if missing:
        raise ValueError(f"{path}: no column {missing} (columns: {columns}).")
    texts, labels, ids, ratings = [], [], [], []
    try:
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            try:
                labels.append(parse_label(row[label_field], label_names))
            except ValueError as e:
                raise ValueError(f"{where}: {e}.") from None
            ratings.append(_rating(row.get(rating_field), where))
            texts.append(row[text_field] or "")
            ids.append(str(row.get(id_field) or reader.line_num))
    except csv.Error as e:  # NUL bytes, oversized fields, bad quoting.
        raise ValueError(f"{path}, line {reader.line_num}: not readable as {kind} ({e}).") from None
    return _finish(path, texts, labels, ids, ratings, label_names)


_ACL_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


def read_aclimdb(root, split):
    """Read the official `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` layout."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"No '{split}' folder in {root} (expected aclImdb/{split}/pos and /neg).")
    texts, labels, ids, ratings = [], [], [], []
    for label, folder in enumerate(("neg", "pos")):
        files = sorted(
            (split_dir / folder).glob("*.txt"),
            key=lambda p: int(_ACL_NAME.match(p.name).group(1)) if _ACL_NAME.match(p.name) else -1,
        )
        for path in files:
            match = _ACL_NAME.match(path.name)
            if not match:
                raise ValueError(f"{path}: expected a file name like <id>_<rating>.txt.")
            try:
                texts.append(path.read_bytes().decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}).") from None
            labels.append(label)
            ids.append(f"{split}/{folder}/{match.group(1)}")
            ratings.append(int(match.group(2)))
    return _finish(split_dir, texts, labels, ids, ratings, LABEL_NAMES)


def load_tfds_imdb(split, data_dir=None):
    """tensorflow-datasets' `imdb_reviews` (downloads once; needs the internet)."""
    import tensorflow_datasets as tfds

    data = tfds.load("imdb_reviews", split=split, data_dir=data_dir, as_supervised=True, batch_size=-1)
    texts, labels = tfds.as_numpy(data)
    texts = [t.decode("utf-8") for t in texts]
    return _finish(f"tfds:imdb_reviews/{split}", texts, labels, None, None, LABEL_NAMES)


def read_reviews(path, **fields):
    """Read a labelled file by its extension: `.jsonl`/`.json` (optionally `.gz`),
    `.csv`, `.tsv`."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path, **fields)
    if kind in (".csv", ".tsv"):
        return read_csv(path, **fields)
    raise ValueError(f"{path}: unknown data file type '{kind}' (use .jsonl, .csv or .tsv, optionally .gz).")

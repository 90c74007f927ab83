"""Unlabelled reviews to score, from text, JSONL or CSV/TSV files or standard input.

Unlike the labelled readers, which refuse a file at its first bad row (a training or
test set with a hole would give a silently different figure), these keep every good
row and return the bad ones beside them, each with its file and line number and why,
so a caller can report them and go on, or refuse (`kgemma-predict --strict`).
"""

import csv
import dataclasses
import gzip
import io
import json
import sys
from pathlib import Path

STDIN = "-"
TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".json")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}


@dataclasses.dataclass(frozen=True)
class TextRow:
    """A review to score: where it came from (file, 1-based line), its id and text."""

    source: str
    line: int
    id: str
    text: str


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A row that cannot be scored, and why."""

    source: str
    line: int
    reason: str

    def __str__(self):
        return f"{self.source}, line {self.line}: {self.reason}"


def read_texts(paths, text_field="text", id_field="id"):
    """Read reviews to score from `paths`, in order.

    Args:
        paths: files (`.txt`: one review a line; `.jsonl`: one JSON object a line;
            `.csv`/`.tsv` with a header; each also gzipped as `.gz`) or `"-"` for
            standard input (one review a line).
        text_field: the JSONL field or CSV column holding the text.
        id_field: the JSONL field or CSV column holding an id (optional in each
            row; the line number when absent).

    Returns:
        `(rows, bad_rows)`: `TextRow`s and `BadRow`s (empty or whitespace-only text,
        bytes that are not UTF-8, lines that are not JSON objects, a missing or
        non-string text field).
    """
    rows, bad = [], []
    for path in paths:
        name = str(path)
        kind = _kind(name)
        lines = _numbered_lines(name, bad)
        if kind == "csv":
            _read_csv(name, lines, CSV_DELIMITERS[_suffix(name)], text_field, id_field, rows, bad)
            continue
        for number, line in lines:
            if kind == "jsonl":
                _jsonl_row(name, number, line, text_field, id_field, rows, bad)
            else:
                _add(rows, bad, name, number, str(number), line.rstrip("\r\n"))
    return rows, bad


def _suffix(name):
    path = Path(name)
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _kind(name):
    if name == STDIN:
        return "text"
    suffix = _suffix(name)
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_DELIMITERS:
        return "csv"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise ValueError(
        f"{name}: unknown file type {suffix or '(none)'!r}; kgemma-predict reads .txt (a review a line), "
        ".jsonl, .csv and .tsv files (each also .gz), and - for standard input."
    )


def _numbered_lines(name, bad):
    """`(line number, text)` for each line that decodes as UTF-8; the others go to `bad`."""
    if name == STDIN:
        stream = sys.stdin.buffer
    else:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"Input file not found: {name}")
        stream = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    number = 0
    try:
        for number, raw in enumerate(stream, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad.append(BadRow(name, number, f"not valid UTF-8 ({e.reason} at byte {e.start})"))
    except (OSError, EOFError) as e:
        raise ValueError(f"{name}: damaged or not a gzip file after line {number} ({type(e).__name__}).") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _add(rows, bad, source, line, row_id, text):
    if not text.strip():
        bad.append(BadRow(source, line, "empty text"))
    else:
        rows.append(TextRow(source, line, row_id, text))


def _jsonl_row(name, number, line, text_field, id_field, rows, bad):
    if not line.strip():
        return  # Blank lines between JSON objects are layout, not rows.
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        bad.append(BadRow(name, number, f"not valid JSON ({getattr(e, 'msg', 'nested too deeply')})"))
        return
    if not isinstance(row, dict):
        bad.append(BadRow(name, number, f"a {type(row).__name__}, not a JSON object"))
    elif not isinstance(row.get(text_field), str):
        problem = "no" if text_field not in row else "a non-string"
        bad.append(BadRow(name, number, f"{problem} '{text_field}' field"))
    else:
        _add(rows, bad, name, number, str(row.get(id_field, number)), row[text_field])


def _read_csv(name, lines, delimiter, text_field, id_field, rows, bad):
    numbered = list(lines)
    starts = [number for number, _ in numbered]  # csv counts physical lines of what it is given.
    reader = csv.DictReader(io.StringIO("".join(line for _, line in numbered), newline=""), delimiter=delimiter)
    try:
        if text_field not in (reader.fieldnames or []):
            raise ValueError(f"{name}: no '{text_field}' column (columns: {reader.fieldnames}).")
        for row in reader:
            number = starts[min(reader.line_num, len(starts)) - 1]
            _add(rows, bad, name, number, str(row.get(id_field) or number), row[text_field] or "")
    except csv.Error as e:
        raise ValueError(f"{name}, line {reader.line_num}: not readable as CSV ({e}).") from None

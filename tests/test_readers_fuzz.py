"""A seeded property test of the labelled-file readers: whatever bytes, encodings,
columns and values a file holds, reading it either returns rows the file really
holds or raises the library's own error naming the file, never anything else."""

import gzip
import json

import numpy as np
import pytest

from kgemma.data import read_reviews

CASES = 150
WORDS = [
    "good",
    "bad",
    "positive",
    "negative",
    "pos",
    "neg",
    "0",
    "1",
    "2",
    "-1",
    "",
    " ",
    "1.0",
    "7",
    "x,y",
    'say "hi"',
    "tab\there",
    "line\nbreak",
    "nul\x00",
    "é",
    "\ufeff",
]
LABELS = ["0", "1", "pos", "neg", "Positive", "negative", "1", "0", "2", "maybe"]
FIELDS = ["text", "label", "id", "rating", "body", "Text", ""]


def random_value(rng, depth=0):
    kind = rng.integers(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return int(rng.integers(-3, 12))
    if kind == 3:
        return float(rng.choice([0.0, 1.0, 1.5, -2.0, 1e300, float("inf")]))
    if kind in (4, 5):
        return str(rng.choice(WORDS)) + str(rng.choice(WORDS))
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(rng.integers(3))]
    return {str(rng.choice(FIELDS)): random_value(rng, depth + 1) for _ in range(rng.integers(3))}


def jsonl_content(rng):
    lines = []
    for _ in range(rng.integers(0, 6)):
        if rng.random() < 0.03:
            lines.append(str(rng.choice(WORDS)))  # Not JSON at all.
            continue
        row = random_value(rng) if rng.random() < 0.05 else {}
        if isinstance(row, dict) and rng.random() < 0.9:  # Mostly well-formed rows, so some files read.
            row.update(text=str(rng.choice(WORDS)) + " review", label=str(rng.choice(LABELS)))
        elif isinstance(row, dict):
            for name in rng.choice(FIELDS, size=rng.integers(0, 5), replace=False):
                row[str(name)] = random_value(rng)
        lines.append(json.dumps(row, allow_nan=True))
    return "\n".join(lines)


def delimited_content(rng, delimiter):
    columns = list(rng.choice(FIELDS, size=rng.integers(1, 5), replace=False))
    if rng.random() < 0.6:
        columns = ["text", "label"] + [c for c in columns if c not in ("text", "label")]
    lines = [delimiter.join(columns)]
    for _ in range(rng.integers(0, 6)):
        cells = [str(rng.choice(WORDS)) for _ in range(rng.integers(0, len(columns) + 2))]
        if rng.random() < 0.9:
            cells = (cells + ["", ""])[: max(len(cells), len(columns))]
            cells[:2] = [str(rng.choice(WORDS)) + " review", str(rng.choice(LABELS))]
        lines.append(delimiter.join(cells))
    return "\n".join(lines)


def encoded(rng, text):
    encoding = rng.choice(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1", "cp1252"])
    try:
        return text.encode(str(encoding))
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass")


def random_file(rng, tmp_path, case):
    suffix = str(rng.choice([".jsonl", ".csv", ".tsv", ".jsonl.gz", ".csv.gz"]))
    kind = rng.integers(6)
    if kind == 0:
        data = rng.bytes(int(rng.integers(0, 300)))
    else:
        text = (
            jsonl_content(rng)
            if suffix.startswith(".jsonl")
            else delimited_content(rng, "\t" if suffix == ".tsv" else ",")
        )
        data = encoded(rng, text)
    if suffix.endswith(".gz") and rng.random() < 0.8:
        data = gzip.compress(data)
        if rng.random() < 0.2:
            data = data[: len(data) // 2]  # A cut-off download.
    path = tmp_path / f"case{case}{suffix}"
    path.write_bytes(data)
    return path


def raw_text(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8")


@pytest.mark.parametrize("seed", range(4))
def test_readers_return_only_real_rows_or_raise_their_own_errors(tmp_path, seed):
    rng = np.random.default_rng(seed)
    outcomes = {"read": 0, "refused": 0}
    for case in range(CASES):
        path = random_file(rng, tmp_path, case)
        try:
            reviews = read_reviews(path)
        except ValueError as e:
            assert str(e).startswith(str(path)), f"error does not name the file: {e!r}"
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        content = raw_text(path)  # A file that read cleanly is valid (gzipped) UTF-8.
        assert 0 < len(reviews) <= content.count("\n") + 1
        assert set(np.unique(reviews.labels)) <= {0, 1}
        for text in reviews.texts:
            assert isinstance(text, str)
            # Every text is in the file: as written, or with CSV's doubled quotes, or JSON-escaped.
            assert text in content or text.replace('"', '""') in content or json.dumps(text)[1:-1] in content, (
                path,
                text,
            )
    assert outcomes["read"] > CASES // 20 and outcomes["refused"] > CASES // 20, outcomes

"""Predictions streamed to `predictions.jsonl`, so an interrupted evaluation resumes."""

import hashlib
import json
from pathlib import Path

import numpy as np


def _fingerprint(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _read_done(path, reviews):
    """Rows already scored in `path`, checked against `reviews`; a torn last line is dropped."""
    done = []
    if not path.is_file():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # Killed mid-write: score that row again.
            raise ValueError(f"{path}, line {number + 1} is corrupt; delete the file to start over.") from None
        i = row["index"]
        if i != len(done) or i >= len(reviews) or row["sha1"] != _fingerprint(reviews.texts[i]):
            raise ValueError(
                f"{path} holds predictions for other data (row {i} differs); "
                "delete it or choose another output folder."
            )
        done.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in done), encoding="utf-8")
    return done


def stream_predictions(path, reviews, score, chunk_size=64, on_progress=None):
    """Score `reviews` with `score(texts) -> (logits, n_tokens)`, appending each chunk's
    rows to `path` as JSON lines; rows already there are reused, not rescored.

    Returns:
        `(logits, n_tokens)` arrays for all reviews, in order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(path, reviews)
    if on_progress:
        on_progress(len(done), len(reviews))
    with open(path, "a", encoding="utf-8") as f:
        for start in range(len(done), len(reviews), chunk_size):
            texts = reviews.texts[start : start + chunk_size]
            logits, n_tokens = score(texts)
            for offset, (row_logits, count) in enumerate(zip(logits, n_tokens)):
                i = start + offset
                row = {
                    "index": i,
                    "id": reviews.ids[i],
                    "sha1": _fingerprint(reviews.texts[i]),
                    "label": int(reviews.labels[i]),
                    "logits": [float(v) for v in row_logits],
                    "n_tokens": int(count),
                }
                f.write(json.dumps(row) + "\n")
                done.append(row)
            f.flush()
            if on_progress:
                on_progress(len(done), len(reviews))
    return np.array([r["logits"] for r in done], dtype="float64"), np.array([r["n_tokens"] for r in done])

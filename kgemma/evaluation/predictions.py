"""Predictions streamed to `predictions.jsonl`, so an interrupted evaluation resumes.

Beside the rows, `predictions.model.json` records which model made them (its
fingerprint: base model, dtype, adapter weights, settings), and a resumed
evaluation reuses rows only for that same model.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from kgemma.files import read_json
from kgemma.files import save_text_atomically


def text_sha1(text):
    """A short SHA-1 of a text: what ties a saved prediction to its input."""
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
        if i != len(done) or i >= len(reviews) or row["sha1"] != text_sha1(reviews.texts[i]):
            raise ValueError(
                f"{path} holds predictions for other data (row {i} differs); delete it or choose another output folder."
            )
        done.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in done), encoding="utf-8")
    return done


def model_record_path(path):
    """Where the fingerprint of the model behind a predictions file is kept."""
    return Path(path).with_suffix(".model.json")


def check_same_model(path, model):
    """Refuse `path`'s saved rows unless `model` (a fingerprint dict) made them."""
    record = model_record_path(path)
    if not record.is_file():
        raise ValueError(
            f"{path} holds predictions from a model it does not name (no {record.name}); "
            "delete it or choose another output folder."
        )
    saved = read_json(record)
    differ = sorted(key for key in set(saved) | set(model) if saved.get(key) != model.get(key))
    if differ:
        details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {model.get(key)!r}" for key in differ[:4])
        raise ValueError(
            f"{path} holds predictions from another model ({details}). Delete it to score "
            "this model there, or choose another output folder."
        )


def stream_predictions(path, reviews, score, chunk_size=64, on_progress=None, model=None):
    """Score `reviews` with `score(texts) -> (logits, n_tokens)`, appending each chunk's
    rows to `path` as JSON lines; rows already there are reused, not rescored.

    Args:
        model: the scoring model's fingerprint (a JSON-able dict, e.g.
            `GemmaSentimentClassifier.fingerprint()`). Rows already saved are
            reused only if the same model made them; otherwise this refuses,
            naming what differs. `None` skips the check.

    Returns:
        `(logits, n_tokens)` arrays for all reviews, in order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(path, reviews)
    if model is not None:
        if done:
            check_same_model(path, model)
        else:
            save_text_atomically(model_record_path(path), json.dumps(model, indent=2))
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
                    "sha1": text_sha1(reviews.texts[i]),
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


SHARD_FILE = "shard.json"


def parse_shard(value):
    """`"I/N"` -> `(I, N)`: this worker scores rows `I, I + N, I + 2N, ...`."""
    index, sep, count = str(value).partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not int(index) < int(count):
        raise ValueError(f"A shard is I/N with 0 <= I < N (e.g. 0/4), got {value!r}.")
    return int(index), int(count)


def shard_rows(n, index, count):
    return np.arange(index, n, count)


def write_shard_info(folder, index, count, n_rows, info):
    """Record which share of how many rows a folder's predictions hold, and the model."""
    shard = {"index": index, "count": count, "rows": n_rows, **info}
    save_text_atomically(Path(folder) / SHARD_FILE, json.dumps(shard, indent=2))


def merge_shards(folders, reviews):
    """Logits and token counts for all `reviews` from the shard folders that scored
    them (each with `predictions.jsonl` and `shard.json`); checks that the shards
    are of these rows, complete, and cover each row exactly once.

    Returns:
        `(logits, n_tokens, shard_info)` with the first shard's recorded model info.
    """
    infos = []
    for folder in folders:
        path = Path(folder) / SHARD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no {SHARD_FILE}: not a folder written by kgemma-eval --shard.")
        infos.append(read_json(path))
    counts = {info["count"] for info in infos}
    if len(counts) != 1 or sorted(info["index"] for info in infos) != list(range(counts.pop())):
        names = ", ".join(f"{info['index']}/{info['count']}" for info in infos)
        raise ValueError(f"Shards {names} are not one complete set of I/N.")
    if any(info["rows"] != len(reviews) for info in infos):
        raise ValueError(
            f"The shards were scored on {infos[0]['rows']} rows; these data have {len(reviews)}. Use the "
            "same --data, --max-examples and --seed."
        )
    first = model_record_path(Path(folders[0]) / "predictions.jsonl")
    for folder in folders[1:]:
        # Every shard must come from the model the first one names.
        if first.is_file():
            check_same_model(Path(folder) / "predictions.jsonl", read_json(first))
    logits, n_tokens = None, np.zeros(len(reviews), dtype="int64")
    for folder, info in zip(folders, infos):
        rows = shard_rows(len(reviews), info["index"], info["count"])
        done = _read_done(Path(folder) / "predictions.jsonl", reviews.subset(rows))
        if len(done) != len(rows):
            raise ValueError(
                f"Shard {info['index']}/{info['count']} in {folder} scored {len(done)} of its {len(rows)} rows; "
                "finish it first."
            )
        shard_logits = np.array([r["logits"] for r in done], dtype="float64")
        if logits is None:
            logits = np.zeros((len(reviews), shard_logits.shape[1]), dtype="float64")
        logits[rows] = shard_logits
        n_tokens[rows] = [r["n_tokens"] for r in done]
    return logits, n_tokens, infos[0]

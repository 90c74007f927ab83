"""Scores for unlabelled reviews, written to a JSONL or CSV file as they come.

`predict_to_file` is what `kgemma-predict` does after reading its inputs. Rows are
scored in chunks (each scored in length-sorted batches by `predict_proba`) and
appended in input order, so an interrupted run resumes: the rows already in the file
are checked against the inputs by position and text hash and kept, and the model
that wrote them is checked by its fingerprint (`NAME.model.json` beside the file),
as `kgemma-eval`'s predictions are.
"""

import csv
import io
import json
import time
from pathlib import Path

from kgemma.evaluation.predictions import check_same_model
from kgemma.evaluation.predictions import model_record_path
from kgemma.evaluation.predictions import text_sha1
from kgemma.files import save_text_atomically

CSV_SUFFIXES = (".csv",)


def output_fields(label_names):
    """The columns of a CSV output (JSONL rows nest the probabilities instead)."""
    return [
        "source",
        "line",
        "id",
        "label",
        *[f"p_{name}" for name in label_names],
        "n_tokens",
        "tokens_read",
        "truncated",
        "sha1",
    ]


def predict_to_file(classifier, rows, path, batch_size=8, chunk_size=256, on_progress=None):
    """Score `rows` with `classifier` into `path`, resuming a file a killed run left.

    Args:
        classifier: a fine-tuned `GemmaSentimentClassifier`.
        rows: `kgemma.data.unlabelled.TextRow`s, in the order to write them.
        path: a `.csv` file (one column per class probability) or JSONL (any other
            name): per row its source file and line, id, predicted label, the
            probability of each class, `n_tokens` (the review's tokens before
            truncation), `tokens_read` (those the model read) and `truncated`.
        batch_size: reviews per forward pass.
        chunk_size: reviews scored and written at a time.
        on_progress: `(done, total, reviews_per_s)` after each chunk.

    Returns:
        How many rows this call scored (the others were in the file already).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(classifier.preprocessor.label_names)
    as_csv = path.suffix.lower() in CSV_SUFFIXES
    done = _rows_done(path, rows, as_csv)
    _check_model(path, classifier.fingerprint(), done)
    if on_progress:
        on_progress(done, len(rows), None)
    # The model reads sequence_length - 1 tokens of a review, after its <bos>.
    capacity = classifier.preprocessor.sequence_length - 1
    with open(path, "a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=output_fields(names)) if as_csv else None
        if writer and f.tell() == 0:
            writer.writeheader()
        for start in range(done, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            texts = [row.text for row in chunk]
            started = time.perf_counter()
            probabilities = classifier.predict_proba(texts, batch_size=batch_size)
            counts = classifier.preprocessor.token_counts(texts)
            seconds = time.perf_counter() - started
            for row, p, count in zip(chunk, probabilities, counts):
                record = {
                    "source": row.source,
                    "line": row.line,
                    "id": row.id,
                    "label": names[int(p.argmax())],
                    "probabilities": {name: float(v) for name, v in zip(names, p)},
                    "n_tokens": int(count),
                    "tokens_read": int(min(count, capacity)),
                    "truncated": bool(count > capacity),
                    "sha1": text_sha1(row.text),
                }
                if writer:
                    flat = {k: v for k, v in record.items() if k != "probabilities"}
                    writer.writerow({**flat, **{f"p_{k}": v for k, v in record["probabilities"].items()}})
                else:
                    f.write(json.dumps(record) + "\n")
            f.flush()
            if on_progress:
                on_progress(start + len(chunk), len(rows), len(chunk) / seconds)
    return len(rows) - done


def _check_model(path, fingerprint, done):
    if done:
        check_same_model(path, fingerprint)
    else:
        save_text_atomically(model_record_path(path), json.dumps(fingerprint, indent=2))


def _rows_done(path, rows, as_csv):
    """How many of `rows` `path` holds already, in order; a torn last line is cut off.
    Refuses a file that holds scores of other inputs."""
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1]  # Killed mid-write: the last line is scored again.
    if as_csv:
        saved = list(csv.DictReader(io.StringIO(text, newline="")))
    else:
        try:
            saved = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"{path} is damaged (a line is not JSON); delete it to score again.") from None
    for i, record in enumerate(saved):
        if i >= len(rows) or (str(record["source"]), int(record["line"]), record["sha1"]) != (
            rows[i].source,
            rows[i].line,
            text_sha1(rows[i].text),
        ):
            raise ValueError(
                f"{path} holds scores of other inputs (its row {i + 1} differs); delete it or choose another --output."
            )
    path.write_text(text, encoding="utf-8")
    return len(saved)

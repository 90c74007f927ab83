"""Paired contrast evaluation: an original review and a minimal edit that flips its label."""

import json
from pathlib import Path

import numpy as np

from kgemma.data import Reviews
from kgemma.data import parse_label
from kgemma.data import read_csv


def read_contrast_tsv(original_path, edited_path, text_field="Text", label_field="Sentiment"):
    """Read the TSV layout of public IMDb contrast-set and counterfactual releases: a header,
    then `Sentiment<TAB>Text` rows (Positive/Negative), the two files aligned by row."""
    original = read_csv(original_path, text_field=text_field, label_field=label_field, delimiter="\t")
    edited = read_csv(edited_path, text_field=text_field, label_field=label_field, delimiter="\t")
    if len(original) != len(edited):
        raise ValueError(
            f"{original_path} has {len(original)} rows but {edited_path} has {len(edited)}; "
            "contrast files must be aligned row by row."
        )
    return original, edited


def read_contrast_jsonl(path):
    """JSONL pairs: `{"original": ..., "original_label": ..., "edited": ..., "edited_label": ...}`."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append(
                    (
                        row["original"],
                        parse_label(row["original_label"]),
                        row["edited"],
                        parse_label(row["edited_label"]),
                    )
                )
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}, line {number}: not a contrast pair ({e}).") from None
    if not rows:
        raise ValueError(f"{path} holds no contrast pairs.")
    texts_o, labels_o, texts_e, labels_e = zip(*rows)
    return Reviews(list(texts_o), labels_o, source=str(path)), Reviews(list(texts_e), labels_e, source=str(path))


def read_contrast(paths):
    """One JSONL file of pairs, or two aligned TSV/CSV files (original, edited)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"Contrast file not found: {p}")
    if len(paths) == 1:
        return read_contrast_jsonl(paths[0])
    return read_contrast_tsv(*paths)


def contrast_metrics(original_labels, original_pred, edited_labels, edited_pred):
    """Accuracy on each side and paired consistency (both of a pair right)."""
    o_right = np.asarray(original_pred) == np.asarray(original_labels)
    e_right = np.asarray(edited_pred) == np.asarray(edited_labels)
    return {
        "n_pairs": int(len(o_right)),
        "labels_flipped": int((np.asarray(original_labels) != np.asarray(edited_labels)).sum()),
        "original_accuracy": float(o_right.mean()),
        "edited_accuracy": float(e_right.mean()),
        "consistency": float((o_right & e_right).mean()),
    }

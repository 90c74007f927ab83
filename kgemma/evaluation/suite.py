"""From predictions to the full `metrics.json` dict: overall, calibration, slices,
contrast pairs, baseline and confident mistakes. Works on arrays, not on models."""

import numpy as np
from scipy.special import softmax

from kgemma.evaluation.calibration import apply_temperature
from kgemma.evaluation.calibration import expected_calibration_error
from kgemma.evaluation.calibration import reliability_bins
from kgemma.evaluation.metrics import accuracy
from kgemma.evaluation.metrics import bootstrap_interval
from kgemma.evaluation.metrics import classification_metrics
from kgemma.evaluation.metrics import macro_f1
from kgemma.evaluation.mistakes import confident_mistakes
from kgemma.evaluation.slices import BUILTIN_SLICES
from kgemma.evaluation.slices import slice_masks

SCHEMA_VERSION = 1
# Confident mistakes listed in a report: overall, and per slice unless asked for more.
MISTAKES_OVERALL = 10
MISTAKES_PER_SLICE = 3


def slice_rows(reviews, n_tokens, sequence_length):
    return [
        {
            "text": text,
            "rating": int(r) if r >= 0 else None,
            "n_tokens": None if n_tokens is None else int(n_tokens[i]),
            "sequence_length": sequence_length,
        }
        for i, (text, r) in enumerate(zip(reviews.texts, reviews.ratings))
    ]


def slice_metrics(labels, predicted, masks, overall_accuracy, baseline_predicted=None, seed=0):
    """Size, accuracy with its interval, macro F1 and gap to overall, per slice."""
    out = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        n = int(mask.sum())
        entry = {
            "n": n,
            "accuracy": None,
            "accuracy_ci95": None,
            "macro_f1": None,
            "macro_f1_ci95": None,
            "gap_to_overall": None,
        }
        if n:
            y, p = labels[mask], predicted[mask]
            slice_accuracy = float(accuracy(y, p))
            entry.update(
                accuracy=slice_accuracy,
                accuracy_ci95=bootstrap_interval(y, p, accuracy, seed=seed),
                macro_f1=float(macro_f1(y, p)),
                macro_f1_ci95=bootstrap_interval(y, p, macro_f1, seed=seed),
                gap_to_overall=slice_accuracy - overall_accuracy,
            )
            if baseline_predicted is not None:
                entry["baseline_accuracy"] = float((y == baseline_predicted[mask]).mean())
        out[name] = entry
    return out


def evaluate_predictions(
    reviews,
    logits,
    n_tokens=None,
    sequence_length=None,
    slices=BUILTIN_SLICES,
    temperature=None,
    baseline_probabilities=None,
    contrast=None,
    mistakes_per_slice=MISTAKES_PER_SLICE,
    seed=0,
):
    """The whole evaluation of one model's predictions on `reviews`.

    Args:
        reviews: the evaluated `Reviews`.
        logits: model outputs, shape `(n, num_classes)`.
        n_tokens: full (untruncated) token count per review, for the `truncated` slice.
        sequence_length: the model's sequence length.
        slices: `Slice` objects to report.
        temperature: a temperature fitted on validation data; probabilities are
            reported after scaling by it (raw calibration is reported too).
        baseline_probabilities: the TF-IDF baseline's probabilities on the same rows.
        contrast: list of `(name, contrast_metrics dict)` already computed.
    """
    labels = reviews.labels
    raw = softmax(np.asarray(logits, dtype="float64"), axis=1)
    probabilities = raw if temperature is None else apply_temperature(logits, temperature)
    overall = classification_metrics(labels, probabilities, reviews.label_names, seed=seed)
    predicted = probabilities.argmax(axis=1)
    masks = slice_masks(slice_rows(reviews, n_tokens, sequence_length), slices)
    baseline_predicted = None if baseline_probabilities is None else np.asarray(baseline_probabilities).argmax(axis=1)
    result = {
        "schema_version": SCHEMA_VERSION,
        "data": {"source": reviews.source, "n": len(reviews), "labels": reviews.label_counts()},
        "overall": overall,
        "calibration": {
            "n_bins": 15,
            "ece": expected_calibration_error(labels, probabilities),
            "ece_before_temperature": expected_calibration_error(labels, raw),
            "temperature": temperature,
            "bins": reliability_bins(labels, probabilities),
            "bins_before_temperature": reliability_bins(labels, raw),
        },
        "slices": slice_metrics(labels, predicted, masks, overall["accuracy"], baseline_predicted, seed=seed),
        "slice_descriptions": {s.name: s.description for s in slices},
        "contrast": [{"name": name, **values} for name, values in (contrast or [])],
        "mistakes": {
            "overall": confident_mistakes(reviews, probabilities, k=MISTAKES_OVERALL),
            "per_slice": {
                name: confident_mistakes(reviews, probabilities, k=mistakes_per_slice, mask=mask)
                for name, mask in masks.items()
            },
        },
    }
    if baseline_probabilities is not None:
        result["baseline"] = {
            "overall": classification_metrics(labels, baseline_probabilities, reviews.label_names, seed=seed)
        }
    return result

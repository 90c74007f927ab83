"""Calibration: expected calibration error, reliability data, temperature scaling."""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import softmax


def reliability_bins(y_true, probabilities, n_bins=15):
    """Per equal-width bin of top-1 confidence: count, mean confidence, accuracy."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (low, high]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(y_true, probabilities, n_bins=15):
    """ECE with equal-width bins of top-1 confidence (Guo et al., 2017)."""
    n = len(y_true)
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(y_true, probabilities, n_bins)
            if b["count"]
        )
    )


def fit_temperature(logits, y_true):
    """The temperature T > 0 minimizing the negative log-likelihood of softmax(logits / T)."""
    logits, y_true = np.asarray(logits, dtype="float64"), np.asarray(y_true)

    def nll(log_t):
        p = softmax(logits / np.exp(log_t), axis=1)
        return -np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, None)).mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def apply_temperature(logits, temperature):
    return softmax(np.asarray(logits, dtype="float64") / temperature, axis=1)

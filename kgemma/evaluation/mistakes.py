"""Error analysis: the mistakes a model was most sure of."""

import numpy as np

from kgemma.data.text import clean_text


def excerpt(text, limit=300):
    text = clean_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def confident_mistakes(reviews, probabilities, k=5, mask=None):
    """The `k` wrong predictions with the highest confidence, optionally within `mask`."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = predicted != reviews.labels
    if mask is not None:
        wrong &= np.asarray(mask, dtype=bool)
    indices = np.flatnonzero(wrong)
    indices = indices[np.argsort(-probabilities[indices].max(axis=1), kind="stable")][:k]
    names = reviews.label_names
    return [
        {
            "index": int(i),
            "id": reviews.ids[i],
            "label": names[reviews.labels[i]],
            "predicted": names[predicted[i]],
            "confidence": float(probabilities[i].max()),
            "rating": int(reviews.ratings[i]) if reviews.ratings[i] >= 0 else None,
            "excerpt": excerpt(reviews.texts[i]),
        }
        for i in indices
    ]

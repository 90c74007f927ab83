"""Seeded, stratified splits and samples."""

import math

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_sample(reviews, n, seed=0):
    """A seeded sample of `n` reviews with the label balance of the whole; all of
    them (shuffled) when `n` is None or not smaller than the collection."""
    indices = np.arange(len(reviews))
    if n is None or n >= len(reviews):
        return reviews.subset(np.random.default_rng(seed).permutation(indices))
    if n < len(np.unique(reviews.labels)):
        raise ValueError(f"A stratified sample needs at least one review per class; got n={n}.")
    chosen, _ = train_test_split(indices, train_size=n, stratify=reviews.labels, random_state=seed)
    return reviews.subset(chosen)


def train_validation_split(reviews, validation_fraction=0.1, seed=0):
    """The report's split: 90% train / 10% validation by default, stratified, seeded, disjoint."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}.")
    _check_splittable(reviews.labels, validation_fraction)
    indices = np.arange(len(reviews))
    train, validation = train_test_split(
        indices, test_size=validation_fraction, stratify=reviews.labels, random_state=seed
    )
    return reviews.subset(train), reviews.subset(validation)


def _check_splittable(labels, validation_fraction):
    """Say in our words what scikit-learn would refuse: a stratified split needs two
    reviews of each class and room for every class on both sides."""
    classes, counts = np.unique(labels, return_counts=True)
    n, k = len(labels), len(classes)
    validation = math.ceil(validation_fraction * n)
    if k and counts.min() >= 2 and k <= validation <= n - k:
        return
    need = max(2 * k, math.ceil(k / validation_fraction), math.ceil(k / (1 - validation_fraction)))
    per_class = ", ".join(f"{c}: {m}" for c, m in zip(classes.tolist(), counts.tolist()))
    raise ValueError(
        f"A stratified {validation_fraction:.0%} validation split needs at least {need} reviews, at least 2 of "
        f"each class; got {n} ({per_class})."
    )

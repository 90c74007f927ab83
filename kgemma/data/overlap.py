"""Exact duplicates within a collection and overlap between training and evaluation."""

from collections import defaultdict

from kgemma.data.text import clean_text


def normalize_text(text):
    """The cleaned text (what the model reads), lower-cased: what counts as 'the same review'."""
    return clean_text(text).lower()


def duplicate_groups(reviews):
    """Lists of indices whose normalized texts are identical (groups of two or more)."""
    groups = defaultdict(list)
    for i, text in enumerate(reviews.texts):
        groups[normalize_text(text)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def overlapping_indices(train, evaluation):
    """Indices of `train` rows whose normalized text also occurs in `evaluation`."""
    seen = {normalize_text(t) for t in evaluation.texts}
    return [i for i, t in enumerate(train.texts) if normalize_text(t) in seen]


def overlap_report(train, evaluation):
    """Counts for a run summary: duplicates inside each set and across them."""
    return {
        "train_duplicate_rows": sum(len(g) - 1 for g in duplicate_groups(train)),
        "evaluation_duplicate_rows": sum(len(g) - 1 for g in duplicate_groups(evaluation)),
        "train_rows_in_evaluation": len(overlapping_indices(train, evaluation)),
    }


def drop_overlap(train, evaluation):
    """`train` without the rows whose text occurs in `evaluation`."""
    drop = set(overlapping_indices(train, evaluation))
    return train.subset([i for i in range(len(train)) if i not in drop])

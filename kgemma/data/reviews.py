"""`Reviews`: labelled texts with their ids and, where known, star ratings."""

from dataclasses import dataclass
from dataclasses import field

import numpy as np

LABEL_NAMES = ("negative", "positive")
UNKNOWN_RATING = -1


@dataclass
class Reviews:
    """A labelled collection of reviews.

    Attributes:
        texts: the review texts.
        labels: int array of class ids (0 negative, 1 positive by default).
        ids: a string id per review (file name, JSON id or row number).
        ratings: int array of star ratings, `UNKNOWN_RATING` (-1) where unknown.
        source: where the reviews came from, for reports.
    """

    texts: list
    labels: np.ndarray
    ids: list = None
    ratings: np.ndarray = None
    source: str = ""
    label_names: tuple = field(default=LABEL_NAMES)

    def __post_init__(self):
        n = len(self.texts)
        self.labels = np.asarray(self.labels, dtype="int32")
        self.ids = [str(i) for i in range(n)] if self.ids is None else list(self.ids)
        if self.ratings is None:
            self.ratings = np.full(n, UNKNOWN_RATING, dtype="int32")
        self.ratings = np.asarray(self.ratings, dtype="int32")
        if not (len(self.labels) == len(self.ids) == len(self.ratings) == n):
            raise ValueError("texts, labels, ids and ratings must have the same length.")

    def __len__(self):
        return len(self.texts)

    def subset(self, indices, source=None):
        """The reviews at `indices`, in that order."""
        indices = np.asarray(indices, dtype="int64")
        return Reviews(
            texts=[self.texts[i] for i in indices],
            labels=self.labels[indices],
            ids=[self.ids[i] for i in indices],
            ratings=self.ratings[indices],
            source=source or self.source,
            label_names=self.label_names,
        )

    def label_counts(self):
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.label_names)}

"""Training batches of similar lengths, in a seeded order that a resumed run can replay."""

import numpy as np

from kgemma.model.batching import padded_width

# Reviews are sorted by length inside windows of this many batches, so batches hold
# similar lengths while the order stays random.
SORT_WINDOW_BATCHES = 50


def epoch_batches(lengths, batch_size, epoch, seed, limit, multiple=1):
    """The batches of one epoch: a list of `(row_indices, width)`.

    The same `(seed, epoch)` always gives the same batches, which is what lets a
    killed run resume at the exact step it stopped. With `multiple` (data-parallel
    replicas), a short batch drops the rows that do not split evenly.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * SORT_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            rows = chunk[b : b + batch_size]
            rows = rows[: len(rows) - len(rows) % multiple]
            if not len(rows):
                continue
            batches.append((rows, padded_width(lengths[rows].max(), limit=limit)))
    return [batches[i] for i in rng.permutation(len(batches))]

"""Dropout whose masks follow the layer's own seed on every backend, and fast on torch.

Keras's `Dropout` draws an unseeded layer's masks on torch from torch's global generator
(elsewhere from the layer's `SeedGenerator`), and one value at a time. kgemma's dropout
layers (the LoRA branches' and the head's) are called through `seeded_dropout`.
"""

import keras

from kgemma.model.compiled import compiled_on_torch


def seeded_dropout(layer, x, training=None):
    """`layer(x, training=training)` for a Keras `Dropout` layer, with its masks drawn
    from the layer's own `SeedGenerator` on every backend. On torch, Keras draws an
    unseeded layer's masks from torch's global generator, which anything else in the
    process may advance (Keras's `fit` and `kgemma.training.fit` on one seeded classifier
    then dropped different units in the head), and slowly; there this is `torch_dropout`."""
    if training and layer.rate > 0 and keras.backend.backend() == "torch":
        return torch_dropout(x, layer.rate, layer.seed_generator)
    return layer(x, training=training)


def torch_dropout(x, rate, seed_generator):
    """Dropout on the torch backend, each value kept or dropped by a hash of its position
    and a seed drawn from `seed_generator`.

    Keras's torch dropout draws `torch.bernoulli` over a full probability tensor, one value
    at a time from torch's CPU generator: 23% of a training step of the recipes' adapted
    blocks (29 masks), and a generator's 16-bit draws still cost a pass of their own. Here
    the mask is computed where it is applied, from the element's index and one seed per
    call (`hashed_dropout`), so torch.compile fuses it into its neighbours and the
    backward pass computes it again instead of reading it back (docs/performance.md). A
    value is dropped below `round(rate * 65536)` of 16 hashed bits and the kept ones
    scaled by the exact kept share, so the expectation is unchanged; the rate is honoured
    to 1/65536. Seeded from the layer's own `SeedGenerator`, so a seeded run repeats its
    masks.
    """
    return hashed_dropout(x, rate, dropout_seed(seed_generator))


def dropout_seed(seed_generator):
    """One mask's seed, drawn from a Keras `SeedGenerator`: an int64 scalar tensor."""
    import torch

    seed = keras.random.randint((), 0, 2**31 - 1, seed=seed_generator, dtype="int32")
    return keras.ops.convert_to_tensor(seed).to(torch.int64)


def hashed_dropout(x, rate, seed):
    """`x` with a share `rate` of its values dropped and the rest scaled up, the mask a
    hash of each value's index and `seed` (a scalar int64 tensor): the same `seed` gives
    the same mask. Torch only; traceable, so a compiled block computes it inline."""
    dropped = round(rate * 65536)
    return _keep(x, seed, dropped, 65536 / (65536 - dropped))


@compiled_on_torch
def _keep(x, seed, dropped, scale):
    """`x` scaled where the hashed 16 bits of its index are at least `dropped`, else 0."""
    import torch

    # Thomas Mueller's 32-bit integer hash of a Weyl sequence, in int64 so that no
    # product overflows; its low 16 bits are uniform to within the test's tolerance.
    h = (torch.arange(x.numel(), dtype=torch.int64, device=x.device).view(x.shape) * 0x9E3779B1 + seed) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    keep = (((h >> 16) ^ h) & 0xFFFF) >= dropped
    return torch.where(keep, x * scale, torch.zeros_like(x))

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
    """Dropout on the torch backend, each mask drawn as 16-bit uniforms cut from 64-bit draws.

    Keras's torch dropout draws `torch.bernoulli` over a full probability tensor, one value
    at a time from torch's CPU generator: 23% of a training step of the recipes' adapted
    blocks (29 masks). Four 16-bit values from each int64 draw cost a fifth of that (20
    against 53 ms forward and backward for 8 x 400 x 2048 values; docs/performance.md). A
    value is dropped below `round(rate * 65536)` and the kept ones scaled by the exact kept
    share, so the expectation is unchanged; the rate is honoured to 1/65536. Seeded from the
    layer's own `SeedGenerator`, so a seeded run repeats its masks.
    """
    import torch

    seed = int(keras.ops.convert_to_numpy(keras.random.randint((), 0, 2**31 - 1, seed=seed_generator)))
    generator = torch.Generator(device=x.device).manual_seed(seed)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, generator=generator, device=x.device)
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform on -32768..32767
    dropped = round(rate * 65536)
    return _keep(x, bits, dropped - 32768, 65536 / (65536 - dropped))


@compiled_on_torch
def _keep(x, bits, threshold, scale):
    """`x` scaled where `bits >= threshold`, else 0: one pass, compiled."""
    return keras.ops.where(bits >= threshold, x * scale, keras.ops.zeros_like(x))

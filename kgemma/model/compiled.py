"""`torch.compile` for the small elementwise functions where eager torch pays a pass over
memory per step (norms, rotary, softmax, GELU, int8 rescaling, dropout masks).

On Keras's torch backend each eager op of such a function reads and writes the whole
tensor; Inductor fuses them into a loop or two (docs/performance.md: the fused blocks'
segments took 28% of the eager forward). TensorFlow and JAX run the same functions as
they are: XLA over the same segments inside TensorFlow's graph was slower, measured.
"""

import functools

import keras


def compiled_on_torch(function):
    """`function` (tensors in, tensors out) under `torch.compile` on the torch backend,
    as it is elsewhere. The eager function stays reachable as `__wrapped__`."""

    @functools.wraps(function)
    def run(*args):
        if keras.backend.backend() != "torch":
            return function(*args)
        return torch_compiled(function)(*args)

    return run


@functools.cache
def torch_compiled(function):
    """`torch.compile(function)`, built once per function."""
    import torch

    # Torch's automatic dynamic shapes: compiled for the first shapes, then once more with
    # only the dims that changed (batch, width) symbolic. The model's own dims (hidden,
    # heads, head size) stay constants; with `dynamic=True` they were symbolic too, and the
    # embedded model's forward ran at 1.48 reviews/s instead of 1.94 (8 x 256, float32,
    # AVX2; docs/performance.md). Two compiles per function, not one per shape.
    return torch.compile(function, dynamic=None)

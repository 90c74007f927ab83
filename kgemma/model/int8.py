"""Int8 matmuls for frozen projections, on Keras's torch backend.

On this project's CPUs TensorFlow's int8 matmul runs at a fifth of its bfloat16 one
(79 against 415 GFLOP/s, docs/performance.md), and Keras's own int8 layers call
`torch._int_mm` only on CUDA; on a CPU with AVX512-VNNI or AMX-int8, `torch._int_mm`
runs the model's shapes at about twice bfloat16. So kgemma quantizes itself, the way
LLM.int8 does without its outlier split: each weight column (output channel) once,
symmetric to int8, and each input row (token) at every call. The int32 products are
rescaled to the input's dtype.

No gradient flows through `torch._int_mm`: only forward-only paths use it, the frozen
blocks below the LoRA-adapted ones (`GemmaSentimentClassifier(frozen_int8=...)`, on by
default where `int8_is_fastest()`), in a trainer's prefix pass and in scoring; the
adapted blocks, the LoRA branches and the head stay float.

The quantization around the matmul runs under `torch.compile`: in eager torch each of
its elementwise steps is a pass over memory, and at the model's projection shapes
they cut int8 from about 880 GFLOP/s (`torch._int_mm` alone) to 213-583, mostly below
bfloat16's 414-444; compiled (fused into a loop or two) it ran at 523-719, the same
results to the last bit (`benchmarks/int8_projection.py`, docs/performance.md).
"""

import keras

from kgemma.model import dtypes
from kgemma.model.compiled import torch_compiled

# Symmetric int8: -127..127, so that a value and its negation round alike.
_LEVELS = 127.0
# CPU flags (as Linux names them) of the int8 dot-product instructions `torch._int_mm` uses on a CPU.
INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni")


def int8_is_fastest():
    """Whether int8 frozen blocks are the fastest choice here: Keras's torch backend on
    a CPU with int8 dot-product instructions (what `frozen_int8=None` chooses)."""
    return keras.backend.backend() == "torch" and bool(dtypes.cpu_flags() & set(INT8_CPU_FLAGS))


def resolve_frozen_int8(setting):
    """A `frozen_int8` setting as a bool: `None` becomes `int8_is_fastest()`."""
    return int8_is_fastest() if setting is None else bool(setting)


def check_int8_backend():
    """Raise unless Keras runs on torch, the backend whose int8 matmul kgemma uses."""
    if keras.backend.backend() != "torch":
        raise ValueError(
            f"int8 matmuls need Keras's torch backend (KERAS_BACKEND=torch); this is {keras.backend.backend()}."
        )


def quantize_columns(kernel):
    """An `(in, out)` float kernel as int8 with one float32 scale per column."""
    import torch

    w = keras.ops.convert_to_tensor(kernel).detach().float()  # A Keras variable or a tensor.
    scale = w.abs().amax(dim=0).clamp(min=1e-12) / _LEVELS
    return torch.round(w / scale).clamp(-_LEVELS, _LEVELS).to(torch.int8), scale


def int8_matmul(x, quantized, scale):
    """`x @ kernel` from the kernel's `quantize_columns` output, `x` quantized per row
    (compiled by `torch.compile` on first use; `eager_int8_matmul` is the same uncompiled)."""
    return torch_compiled(eager_int8_matmul)(x, quantized, scale)


def eager_int8_matmul(x, quantized, scale):
    """`int8_matmul` in eager torch: the reference the compiled function must equal."""
    import torch

    rows = x.reshape(-1, x.shape[-1]).float()
    row_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / _LEVELS
    rows = torch.round(rows / row_scale).clamp(-_LEVELS, _LEVELS).to(torch.int8)
    y = torch._int_mm(rows, quantized).float() * row_scale * scale
    return y.reshape(*x.shape[:-1], quantized.shape[1]).to(x.dtype)


def cached_int8_kernel(layer, kernel):
    """`quantize_columns(kernel)` for `layer`, kept on the layer until its kernel changes.

    `kernel` is the layer's kernel as the fused blocks lay it out `(in, out)`. Keras's
    `assign` on torch writes in place, which bumps the tensor's version counter: a new
    version (new weights) is quantized again.
    """
    source = layer.kernel.value
    version = (source.data_ptr(), source._version)
    cached = getattr(layer, "kgemma_int8", None)
    if cached is None or cached[0] != version:
        cached = (version, *quantize_columns(kernel))
        # Not a Keras attribute: derived state, never saved.
        object.__setattr__(layer, "kgemma_int8", cached)
    return cached[1], cached[2]

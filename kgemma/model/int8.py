"""Int8 matmuls for frozen projections, on Keras's torch backend.

On this project's CPUs TensorFlow's int8 matmul runs at a fifth of its bfloat16 one
(79 against 415 GFLOP/s, docs/performance.md), and Keras's own int8 layers call
`torch._int_mm` only on CUDA; on a CPU with AVX512-VNNI or AMX-int8, `torch._int_mm`
runs the model's shapes at about twice bfloat16. So kgemma quantizes itself, the way
LLM.int8 does without its outlier split: each weight column (output channel) once,
symmetric to int8, and each input row (token) at every call. The int32 products are
rescaled to the input's dtype.

On a CPU without int8 dot-product instructions (AVX2 alone) `torch._int_mm` is a plain
loop (1-3 GFLOP/s), but oneDNN's int8 matmul runs the model's shapes at about 1.7x
float32 (`onednn.qlinear_pointwise`, the kernel torch's own x86 int8 quantization
uses). Its AVX2 kernel sums pairs of u8 x s8 products in 16 bits, with saturation, so
the weights there are quantized to -63..63, which keeps every pair in range and the
products exact (docs/performance.md).

Every projection's kernel is frozen, in the adapted blocks too (LoRA trains a branch
beside it), so `GemmaSentimentClassifier(frozen_int8=...)` (on by default where
`int8_is_fastest()`) runs every block's projections this way, in training, in a trainer's
prefix pass and in scoring; the LoRA branches, norms, attention and head stay float. Where
training differentiates through a projection, the gradient of its input is an int8 matmul
too: the output's gradient, quantized per row, times the kernel's transpose, quantized per
input channel, as SwitchBack does (Wortsman et al., 2023, "Stable and low-precision
training for large-scale vision-language models"). No kernel gradient is needed. With LoRA on
every block, a training step at 8 x 256 on an AVX2 CPU ran at 1.06 reviews/s, against 0.78 in
float32 (docs/performance.md).

The quantization around the matmul runs under `torch.compile`: in eager torch each of
its elementwise steps is a pass over memory, and at the model's projection shapes
they cut int8 from about 880 GFLOP/s (`torch._int_mm` alone) to 213-583, mostly below
bfloat16's 414-444; compiled (fused into a loop or two) it ran at 523-719, the same
results to the last bit (`benchmarks/int8_projection.py`, docs/performance.md).
"""

import functools

import keras

from kgemma.model import dtypes
from kgemma.model.compiled import built_once
from kgemma.model.compiled import torch_compiled
from kgemma.model.compiled import with_own_code

# Symmetric int8: -127..127, so that a value and its negation round alike.
_LEVELS = 127.0
# Weights for oneDNN's AVX2 kernel: 255 x 63 x 2 < 2^15, so no sum of two products saturates.
_PAIR_SAFE_LEVELS = 63.0
# oneDNN's int8 matmul takes its inputs as uint8 with this zero point (int8 value + 128).
# Given int8 inputs, it reordered the whole kernel on every call, adding what the uint8
# form needs: about 2.2 ms a call at 640 x 2,048 whatever the rows, which doubled the time
# of a projection of 256 rows (docs/performance.md). The results are the same to the bit.
ONEDNN_ZERO_POINT = 128
# CPU flags (as Linux names them) of the int8 dot-product instructions `torch._int_mm` uses on a CPU.
INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni")
# Without them, oneDNN's int8 kernel for AVX2 (and newer x86 CPUs).
ONEDNN_INT8_CPU_FLAGS = ("avx2",)
# What `frozen_int8=None` chooses, in words, for docstrings and the CLIs' help.
INT8_DEFAULT = "on with Keras's torch backend on an x86 CPU with AVX2 or newer, else off"


def int8_is_fastest():
    """Whether int8 frozen blocks are the fastest choice here (what `frozen_int8=None`
    chooses): Keras's torch backend on a CPU with int8 dot-product instructions, or with
    AVX2 for oneDNN's int8 kernel (1.2-1.3x float32 on real lengths on a CPU with AVX2
    alone, docs/performance.md)."""
    flags = dtypes.cpu_flags()
    return keras.backend.backend() == "torch" and bool(flags & {*INT8_CPU_FLAGS, *ONEDNN_INT8_CPU_FLAGS})


def has_int8_dot_products():
    """Whether this CPU has the int8 dot-product instructions `torch._int_mm` uses."""
    return bool(dtypes.cpu_flags() & set(INT8_CPU_FLAGS))


def resolve_frozen_int8(setting):
    """A `frozen_int8` setting as a bool: `None` becomes `int8_is_fastest()`."""
    return int8_is_fastest() if setting is None else bool(setting)


def check_int8_backend():
    """Raise unless Keras runs on torch, the backend whose int8 matmul kgemma uses."""
    if keras.backend.backend() != "torch":
        raise ValueError(
            f"int8 matmuls need Keras's torch backend (KERAS_BACKEND=torch); this is {keras.backend.backend()}."
        )


def quantize_columns(kernel, levels=_LEVELS):
    """An `(in, out)` float kernel as int8 in `-levels..levels`, with one float32 scale per column."""
    import torch

    w = keras.ops.convert_to_tensor(kernel).detach().float()  # A Keras variable or a tensor.
    scale = w.abs().amax(dim=0).clamp(min=1e-12) / levels
    return torch.round(w / scale).clamp(-levels, levels).to(torch.int8), scale


def int8_kernel(kernel, onednn=None):
    """`(weights, scale)` for `int8_matmul` from an `(in, out)` float kernel: int8
    weights for `torch._int_mm`, or with `onednn` (default: on a CPU without int8
    dot-product instructions) weights in -63..63 packed for oneDNN's int8 matmul."""
    import torch

    if onednn is None:
        onednn = not has_int8_dot_products()
    quantized, scale = quantize_columns(kernel, _PAIR_SAFE_LEVELS if onednn else _LEVELS)
    # The output width, a constant in `int8_matmul`'s compiled code (see there).
    torch._dynamo.mark_static(scale, 0)
    int8_projection_function()  # built here, outside any compiled function (which would trace it)
    if not onednn:
        return quantized, scale
    onednn_int8_op()  # registered here, outside any compiled function
    return torch.ops.onednn.qlinear_prepack(quantized.t().contiguous(), None), scale


def int8_projection(x, kernel, transposed=None, onednn=False):
    """`x @ kernel` as an int8 matmul, from the kernel's `int8_kernel` `(weights, scale)`;
    `onednn` says which kind they are (torch.compile's stand-in for oneDNN's packed
    weights does not say). Where autograd wants `x`'s gradient, it is an int8 matmul of
    the output's gradient with the kernel's transpose, whose `int8_kernel` is
    `transposed`; the kernel gets none. Plain torch, for a compiled block to trace (eager,
    each step is a pass over memory: `int8_matmul` is the one compiled alone)."""
    import torch

    matmul = _matmul_for(onednn)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return matmul(x, *kernel)
    if transposed is None:
        raise ValueError("int8_projection needs the transposed kernel to give its input a gradient.")
    return int8_projection_function().apply(x, *kernel, *transposed, matmul)


@built_once
def int8_projection_function():
    """The autograd function of `int8_projection`, built on first use (this module
    imports torch only on the torch backend)."""
    import torch

    class Int8Projection(torch.autograd.Function):
        @staticmethod
        def forward(x, weights, scale, transposed, transposed_scale, matmul):
            return matmul(x, weights, scale)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[3], inputs[4])
            ctx.matmul = inputs[5]

        @staticmethod
        def backward(ctx, grad):
            return ctx.matmul(grad.contiguous(), *ctx.saved_tensors), None, None, None, None, None

    return Int8Projection


def int8_matmul(x, weights, scale):
    """`x @ kernel` from the kernel's `int8_kernel`, `x` quantized per row (compiled by
    `torch.compile` on first use; `eager_int8_matmul` is the same uncompiled)."""
    import torch

    # One compiled function per output width (the query's, the keys', the hidden size, the
    # feed-forward's), each under a code object of its own: torch's limit of 8 graphs holds
    # per code object, and each width may compile again for a symbolic input width or a
    # batch of one. The output width stays a constant, and the batch and width are dynamic
    # from the first call. Left to torch's automatic dynamic shapes, the output width turned
    # symbolic from the second projection on, torch marked it dynamic for the compiled
    # segment the output feeds, and the attention, given keys of a symbolic width, ran 2.7x
    # slower (docs/performance.md). The input width may turn symbolic (it only sets the
    # quantization's row reductions): with it constant too, a batch of one (a size torch
    # always specializes) on top took 10 graphs, past torch's limit of 8 a function.
    # (The output width is marked static once, on the column scales, by `int8_kernel`.)
    for axis in range(x.ndim - 1):
        torch._dynamo.maybe_mark_dynamic(x, axis)
    # Never differentiated here (`int8_projection` gives the input its gradient), and run
    # in one grad mode: torch compiles a function again for each, and a training step
    # calls this both with gradients on (where the input needs none) and off.
    with torch.no_grad():
        return _compiled_matmul(_matmul_for(weights.is_mkldnn), int(scale.shape[0]))(x, weights, scale)


@functools.cache
def _compiled_matmul(matmul, width):
    """`matmul` compiled for one output width, under a code object of its own."""
    return torch_compiled(with_own_code(matmul, f"{matmul.__name__}_{width}"))


def eager_int8_matmul(x, weights, scale):
    """`int8_matmul` in eager torch: the reference the compiled function must equal."""
    return _matmul_for(weights.is_mkldnn)(x, weights, scale)


def _matmul_for(onednn):
    """The int8 matmul for weights packed by oneDNN (`onednn`, their `is_mkldnn`) or not.
    Chosen outside a compiled function: torch.compile's stand-in for a packed (mkldnn)
    tensor does not say that it is one."""
    return _onednn_matmul if onednn else _int_mm_matmul


def _int_mm_matmul(x, quantized, scale):
    import torch

    rows, row_scale = _quantized_rows(x)
    return _rescaled(torch._int_mm(rows, quantized).float() * row_scale * scale, x)


def _onednn_matmul(x, packed, scale):
    import torch

    rows, row_scale = _quantized_rows(x, ONEDNN_ZERO_POINT)
    # `onednn_int8_op`, registered by `int8_kernel`; oneDNN applies the column scales.
    return _rescaled(torch.ops.kgemma.onednn_int8_matmul(rows, packed, scale) * row_scale, x)


def _rescaled(y, x):
    """The `(rows, out)` float32 product `y` in `x`'s leading shape and dtype."""
    return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)


def _quantized_rows(x, zero_point=0):
    """`x` as int8 rows, each symmetric to its own absolute maximum, and those scales. With
    a `zero_point` (oneDNN's 128), the rows come as uint8 `zero_point + int8 value`."""
    import torch

    rows = x.reshape(-1, x.shape[-1]).float()
    row_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / _LEVELS
    levels = torch.round(rows / row_scale).clamp(-_LEVELS, _LEVELS)
    if zero_point:
        return (levels + zero_point).to(torch.uint8), row_scale
    return levels.to(torch.int8), row_scale


def as_onednn_rows(rows):
    """int8 `rows` in the form `onednn_int8_op` takes: uint8, `ONEDNN_ZERO_POINT` above each value."""
    import torch

    return (rows.to(torch.int16) + ONEDNN_ZERO_POINT).to(torch.uint8)


@functools.cache
def onednn_int8_op():
    """`kgemma::onednn_int8_matmul(rows, packed, scale)`: oneDNN's int8 matmul, float32 out,
    as a torch op that `torch.compile` calls as it is. `rows` are uint8, each value
    `ONEDNN_ZERO_POINT` above the int8 one it stands for (see there). Inductor's own lowering of
    `onednn.qlinear_pointwise` takes the packed weights only as a frozen graph constant,
    and a compiled segment gets them as an input. Built on first use: this module
    imports torch only on the torch backend."""
    import torch

    @torch.library.custom_op("kgemma::onednn_int8_matmul", mutates_args=())
    def onednn_int8_matmul(rows: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        zero_points = torch.zeros(scale.shape[0], dtype=torch.long)
        # Input scale 1 (`rows` are quantized already) and kgemma's zero point; float32 out, no post-op.
        return torch.ops.onednn.qlinear_pointwise(
            rows, 1.0, ONEDNN_ZERO_POINT, packed, scale, zero_points, None, 1.0, 0, torch.float32, "none", [], ""
        )

    @onednn_int8_matmul.register_fake
    def _(rows, packed, scale):
        return rows.new_empty((rows.shape[0], scale.shape[0]), dtype=torch.float32)

    return onednn_int8_matmul


def cached_int8_kernel(layer, kernel, transposed=False):
    """`int8_kernel(kernel)` for `layer` (of its transpose, for the input's gradient,
    with `transposed`), kept on the layer until its kernel changes.

    `kernel()` returns the layer's kernel as the fused blocks lay it out `(in, out)`,
    called on a miss only (a layout can be a copy). Keras's
    `assign` on torch writes in place, which bumps the tensor's version counter: a new
    version (new weights) is quantized again.
    """
    source = layer.kernel.value
    version = (source.data_ptr(), source._version)
    cached = getattr(layer, "kgemma_int8", None)
    if cached is None or cached[0] != version:
        cached = (version, {})
        # Not a Keras attribute: derived state, never saved.
        object.__setattr__(layer, "kgemma_int8", cached)
    if transposed not in cached[1]:
        cached[1][transposed] = int8_kernel(keras.ops.transpose(kernel()) if transposed else kernel())
    return cached[1][transposed]

"""LoRA as a separate low-rank branch beside a frozen `EinsumDense` projection.

Keras's built-in `EinsumDense.enable_lora` merges `A @ B` into the kernel before its
einsum, so training forms the full-size kernel gradient and there is no place for
dropout on the LoRA path. Here the branch is `dropout(x) @ A @ B * alpha / rank`,
added to the frozen projection's output, as in Hu et al. (2021) and PEFT.

The adapters are layers of their own, owned by the task model; the backbone keeps
its plain weights, so a backbone rebuilt from its config takes the same adapters.
"""

import math
import re
import string

import keras
from keras import ops

from kgemma.model.compiled import built_once
from kgemma.model.dropout import dropout_seed
from kgemma.model.dropout import hashed_dropout
from kgemma.model.dropout import seeded_dropout

# Which projections each named target set adapts, by keras-hub's Gemma layer names.
LORA_TARGETS = {
    "query_value": ("query_dense", "value_dense"),
    "attention": ("query_dense", "key_dense", "value_dense", "output_dense"),
    "all": (
        "query_dense",
        "key_dense",
        "value_dense",
        "output_dense",
        "gating_ffw",
        "gating_ffw_2",
        "ffw_linear",
    ),
}


def _split_einsum(equation):
    """Split `"btd,ndh->btnh"` into input, kernel and output axis letters."""
    inputs, output = equation.split("->")
    x_axes, kernel_axes = inputs.split(",")
    return x_axes, kernel_axes, output


@keras.saving.register_keras_serializable(package="kgemma")
class LoRAAdapter(keras.layers.Layer):
    """The low-rank update of one `EinsumDense` projection.

    The kernel's axes that the input contracts are the LoRA "in" side (A), the
    kernel's axes that reach the output are the "out" side (B): for a Gemma query
    projection `btd,ndh->btnh`, A is `(d, rank)` and B is `(rank, n, h)`.

    Args:
        equation: the adapted layer's einsum equation.
        kernel_shape: the adapted layer's kernel shape.
        rank: int, the LoRA rank.
        alpha: float, the LoRA scale numerator; the update is scaled by
            `alpha / rank`.
        dropout: float, dropout on the branch's input during training.
    """

    def __init__(self, equation, kernel_shape, rank=8, alpha=16.0, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if int(rank) < 1:
            raise ValueError(f"lora_rank must be a positive integer, got {rank!r}.")
        self.equation = equation
        self.kernel_shape = tuple(kernel_shape)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.dropout_layer = keras.layers.Dropout(self.dropout)
        x_axes, kernel_axes, out_axes = _split_einsum(equation)
        r = next(c for c in string.ascii_letters if c not in equation)
        in_axes = [a for a in kernel_axes if a in x_axes]
        out_kernel_axes = [a for a in kernel_axes if a in out_axes]
        batch_axes = "".join(a for a in x_axes if a not in kernel_axes)
        dims = dict(zip(kernel_axes, self.kernel_shape))
        self.a_equation = f"{x_axes},{''.join(in_axes)}{r}->{batch_axes}{r}"
        self.b_equation = f"{batch_axes}{r},{r}{''.join(out_kernel_axes)}->{out_axes}"
        self.a_shape = tuple(dims[a] for a in in_axes) + (self.rank,)
        self.b_shape = (self.rank,) + tuple(dims[a] for a in out_kernel_axes)
        # Whether the branch is two 2-D matmuls of the flattened input: the einsum contracts the
        # input's trailing axes and fills the output's (every Gemma projection).
        self._flat = x_axes == batch_axes + "".join(in_axes) and out_axes == batch_axes + "".join(out_kernel_axes)
        self._batch_rank = len(batch_axes)

    def build(self, input_shape=None):
        # A starts random and B at zero, so the adapted model starts as the base model.
        self.lora_a = self.add_weight(name="lora_a", shape=self.a_shape, initializer="he_uniform", dtype="float32")
        self.lora_b = self.add_weight(name="lora_b", shape=self.b_shape, initializer="zeros", dtype="float32")
        self.built = True

    @property
    def scale(self):
        """The update's scale, `alpha / rank`."""
        return self.alpha / self.rank

    def call(self, inputs, training=None):
        if self._flat and keras.backend.backend() == "torch":
            return torch_lora_update(inputs, self.torch_branch(training), self.scale, self.dropout, self._batch_rank)
        x = seeded_dropout(self.dropout_layer, inputs, training)
        a, b = ops.cast(self.lora_a, x.dtype), ops.cast(self.lora_b, x.dtype)
        update = ops.einsum(self.b_equation, ops.einsum(self.a_equation, x, a), b)
        return update * ops.cast(self.scale, x.dtype)

    def torch_branch(self, training=None):
        """This adapter as tensors for `torch_lora_update` (torch backend): `(a, b, seed)`,
        the weights and, in training with dropout, the seed of this call's mask, drawn
        here from the layer's generator as `call` draws it; else `None`."""
        if not self._flat:
            raise ValueError(f"{self.name}'s einsum {self.equation!r} does not contract its input's trailing axes.")
        training = training and self.dropout > 0
        seed = dropout_seed(self.dropout_layer.seed_generator) if training else None
        low_rank_function()  # built here, eagerly: torch.compile would trace its class statement
        return self.lora_a.value, self.lora_b.value, seed

    def attach(self, layer):
        """Route `layer`'s forward pass through this adapter: `layer(x) + self(x)`.

        Keras sends a quantized layer to `quantized_call`, past `call`, so the
        adapter would silently drop out: a quantized layer is refused, and one
        quantized after attaching refuses to run.
        """
        if is_quantized(layer):
            raise ValueError(
                f"Layer '{layer.path}' is quantized ({layer.dtype_policy.quantization_mode}); kgemma's LoRA adapters "
                "run beside float kernels only. Quantize after merging, or attach to an unquantized backbone."
            )
        base_call = type(layer).call.__get__(layer)

        def refuse_quantized(*args, **kwargs):
            raise ValueError(
                f"Layer '{layer.path}' was quantized after a LoRA adapter was attached, which would drop the "
                "adapter from its output; kgemma's LoRA runs beside float kernels only."
            )

        layer.quantized_call = refuse_quantized

        def call_with_lora(inputs, training=None):
            base = base_call(inputs, training=training)
            # The adapter computes in float32 (its own policy) whatever the backbone's dtype.
            return base + ops.cast(self(inputs, training=training), base.dtype)

        layer.call = call_with_lora
        # Not a Keras attribute: the adapter belongs to the task, not the backbone.
        object.__setattr__(layer, "kgemma_lora", self)

    def get_config(self):
        return {
            **super().get_config(),
            "equation": self.equation,
            "kernel_shape": list(self.kernel_shape),
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
        }


def torch_low_rank_update(x, a, b, scale, batch_rank):
    """`x @ a @ b * scale` on the torch backend, for `x` whose first `batch_rank` axes are
    batch axes and the rest the contracted ones, `a` of shape `(*in, rank)` and `b` of
    shape `(rank, *out)`.

    Every product whose result is `rank` wide (`x @ a`, and in the backward pass the low-rank
    gradient and `a`'s) is computed transposed, `rank` rows by many columns. MKL (torch's
    CPU matmul) ran the narrow form, `(640, 2048) @ (2048, 8)`-shaped, at a sixth of the
    speed of the wide one (2.6 against 0.45 ms), and `torch.einsum` chose the narrow form:
    a branch's forward and backward took 30-55% less time this way (docs/performance.md).
    """
    rows = x.reshape(-1, math.prod(a.shape[:-1]))  # math, not numpy: torch.compile traces it
    update = low_rank_function().apply(rows, a.reshape(-1, a.shape[-1]), b.reshape(b.shape[0], -1), scale)
    return update.reshape(*x.shape[:batch_rank], *b.shape[1:])


def torch_lora_update(x, branch, scale, rate, batch_rank):
    """A LoRA branch's update of `x` from an adapter's `torch_branch` and its `scale` and
    dropout `rate` (`torch_low_rank_update`'s shapes): what the adapter's `call` computes on
    torch, from tensors alone, so that a compiled block traces it."""
    a, b, seed = branch
    if seed is not None:
        x = hashed_dropout(x, rate, seed)
    return torch_low_rank_update(x, a.to(x.dtype), b.to(x.dtype), scale, batch_rank)


@built_once
def low_rank_function():
    """The autograd function of `torch_low_rank_update`, built on first use (torch only)."""
    import torch

    class LowRankUpdate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, rows, a, b, scale):
            low = torch.mm(a.t(), rows.t()) * scale  # (rank, rows), scaled while it is small
            ctx.save_for_backward(rows, a, b, low)
            ctx.scale = scale
            return torch.mm(low.t(), b)

        @staticmethod
        def backward(ctx, grad):
            rows, a, b, low = ctx.saved_tensors
            grad_low = torch.mm(b, grad.t()) * ctx.scale  # (rank, rows)
            grad_rows = torch.mm(grad_low.t(), a.t()) if ctx.needs_input_grad[0] else None
            return grad_rows, torch.mm(grad_low, rows).t(), torch.mm(low, grad), None

    return LowRankUpdate


def is_quantized(layer):
    """True for a layer Keras has quantized (int8, float8, ...)."""
    return getattr(layer.dtype_policy, "quantization_mode", None) is not None


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def lora_target_layers(backbone, targets="query_value"):
    """`(attribute, EinsumDense)` pairs a named target set adapts, in model order.

    Layers are found by the attribute names keras-hub's Gemma attention and decoder
    blocks give them (`query_dense`, `gating_ffw`, ...), the same in Gemma 1, 2 and 3.
    """
    if targets not in LORA_TARGETS:
        raise ValueError(f"lora_targets must be one of {sorted(LORA_TARGETS)}, got {targets!r}.")
    found = []
    for owner in backbone._flatten_layers(include_self=False):
        for attribute in LORA_TARGETS[targets]:
            layer = getattr(owner, attribute, None)
            if isinstance(layer, keras.layers.EinsumDense):
                found.append((attribute, layer))
    if not found:
        raise ValueError(f"{type(backbone).__name__} has no {LORA_TARGETS[targets]} projections to adapt.")
    return sorted(found, key=lambda pair: _natural_key(pair[1].path))


def block_index(layer):
    """The decoder block a backbone layer belongs to, from its path."""
    match = re.search(r"decoder_block_(\d+)", layer.path)
    if match is None:
        raise ValueError(f"Layer '{layer.path}' is not inside a decoder block.")
    return int(match.group(1))


def first_adapted_block(num_layers, lora_layers=None):
    """Index of the lowest decoder block LoRA adapts: `lora_layers=None` adapts all
    blocks, an integer N the top N. The blocks below it stay frozen."""
    if lora_layers is None:
        return 0
    if not isinstance(lora_layers, int) or not 1 <= lora_layers <= num_layers:
        raise ValueError(
            f"lora_layers must be an integer from 1 to {num_layers} (the backbone's layers), or None for "
            f"all; got {lora_layers!r}."
        )
    return num_layers - lora_layers


def attach_lora(backbone, rank=8, alpha=16.0, dropout=0.1, targets="query_value", lora_layers=None):
    """Create one `LoRAAdapter` per target projection and attach it; return the list.

    With `lora_layers=N` only the top N decoder blocks are adapted. Adapters keep
    their index among all target projections in their name, so the same layer
    has the same adapter name whatever `lora_layers` is.
    """
    lowest = first_adapted_block(backbone.num_layers, lora_layers)
    adapters = []
    for index, (attribute, layer) in enumerate(lora_target_layers(backbone, targets)):
        if block_index(layer) < lowest:
            continue
        if hasattr(layer, "kgemma_lora"):
            raise ValueError(f"Layer '{layer.path}' already has a LoRA adapter attached.")
        adapter = LoRAAdapter(
            equation=layer.equation,
            kernel_shape=layer.kernel.shape,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            name=f"lora_{index}_{attribute}",
        )
        adapter.build()
        adapter.attach(layer)
        adapters.append(adapter)
    return adapters

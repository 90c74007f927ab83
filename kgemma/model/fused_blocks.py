"""Gemma 3 decoder blocks run as plain matmuls, with masks and rotary tables built once.

keras-hub's `Gemma3DecoderBlock` rebuilds the causal, padding and sliding-window masks,
the rotary tables and the empty-row check in every block of every call, and reaches each
projection through an `EinsumDense` (and, here, a LoRA branch wrapped around its `call`).
`run_blocks` computes the same function from the same variables with that work done once
per batch: the masks become one additive bias per window kind, the rotary tables one
pair per wavelength, and every projection one `matmul`; the attention of a long batch runs
in causal chunks of queries, each against the keys up to its own end (`causal_chunks`),
which skips most of the scores the causal mask would hide. In float32 it matches keras-hub
to rounding (tested); in bfloat16 it rounds in fewer places (norms, rotary and the
query scale stay float32 until the matmul). It differentiates like any Keras code, and
the LoRA adapters keep their own layer (dropout included), so it serves the frozen
prefix, the trained upper blocks and inference alike.

Backbones it cannot run exactly (Gemma 1 and 2, attention soft caps, bidirectional or
vision models, quantized layers) take keras-hub's own blocks: `supports_fused` says which.
"""

import functools

import keras
import numpy as np
from keras import ops

from kgemma.model.compiled import compiled_on_torch
from kgemma.model.compiled import with_own_code
from kgemma.model.int8 import check_int8_backend
from kgemma.model.int8 import int8_projection
from kgemma.model.lora import is_quantized


def supports_fused(backbone):
    """True for the text-only Gemma 3 backbones the fused blocks compute exactly."""
    import keras_hub

    if not isinstance(backbone, keras_hub.models.Gemma3Backbone) or getattr(backbone, "vision_encoder", None):
        return False
    block = backbone.transformer_layers[0]
    # The fused blocks read float kernels; a quantized layer keeps its own (int8) ones.
    if any(is_quantized(layer) for layer in backbone._flatten_layers(include_self=False)):
        return False
    return (
        block.use_query_key_norm
        # The fused attention normalizes queries and keys with one epsilon.
        and block.attention.query_norm.epsilon == block.attention.key_norm.epsilon
        and block.use_post_attention_norm
        and block.use_post_ffw_norm
        and block.logit_soft_cap is None
        and not block.use_bidirectional_attention
        and block.gate_dim_reduction == 1
        and not block.dropout
    )


def run_blocks(blocks, x, padding_mask, training=None, fused=True, int8=False):
    """Hidden states `x` through `blocks` (consecutive decoder blocks of one backbone).

    Args:
        blocks: a list of decoder blocks, lowest first.
        x: `(batch, length, hidden)` states entering the first block.
        padding_mask: `(batch, length)`, 1 for tokens, 0 for right padding.
        training: passed to the LoRA adapters (their dropout).
        fused: run Gemma 3 blocks as fused matmuls; False (or a backbone that
            `supports_fused` refuses) calls each keras-hub block.
        int8: run the blocks' own projections (not the LoRA branches) as int8
            matmuls (`kgemma.model.int8`; torch backend, fused blocks).
    """
    if int8:
        check_int8_backend()
        if not fused:
            raise ValueError("int8 matmuls run in kgemma's fused Gemma 3 blocks only; this backbone takes keras-hub's.")
    if not blocks:
        return x
    if not fused:
        for block in blocks:
            x = block(x, padding_mask=padding_mask)
        return x
    context = _BatchContext(x, padding_mask, int8)
    for block in blocks:
        x = _fused_block(block, x, context, training)
    return x


class _BatchContext:
    """What every block of a batch shares: its `(batch, length)` for reshapes, and
    attention biases and rotary tables, built on first use for each window kind and
    wavelength."""

    def __init__(self, x, padding_mask, int8=False):
        self.rows = ops.shape(x)[:2]
        self.padding_mask = padding_mask
        self.int8 = int8
        self._bias = {}
        self._rotary = {}
        self._shapes = {}

    @property
    def length(self):
        return self.rows[1]

    def shape(self, *tail):
        """`(batch, length, *tail)` for a reshape, built once per batch and tail. On
        TensorFlow, with a batch or width unknown while tracing, every reshape to a new
        tuple packed its dims into a tensor again: a Pack and a Const per dim to trace."""
        if tail not in self._shapes:
            self._shapes[tail] = _packed((*self.rows, *tail))
        return self._shapes[tail]

    def head_shapes(self, n_q, n_kv, head):
        """The reshapes `_attend` takes, built once per batch: `(batch, length, ...)` for
        the query, key and value heads, the query grouped by key head and the output; then
        the grouped layouts of the queries, scores, weights and mixing."""
        key = ("heads", n_q, n_kv, head)
        if key not in self._shapes:
            groups = n_q // n_kv
            batch, length = self.rows
            self._shapes[key] = (
                self.shape(n_q, head),
                self.shape(n_kv, head),
                self.shape(n_kv, groups, head),
                self.shape(n_q * head),
                _packed((batch, n_kv, length * groups, head)),
                _packed((batch, n_kv, length, groups, length)),
                _packed((batch, n_kv, length * groups, length)),
                _packed((batch, n_kv, length, groups, head)),
            )
        return self._shapes[key]

    def attention_bias(self, window):
        """`(batch, 1, query, 1, key)` float32: 0 where a query may attend, -1e9 elsewhere.

        Causal and padding, and with `window`, keys at most `window - 1` positions
        back (keras-hub's `band_part(window - 1)`). A window at least as long as
        a sequence of known length changes nothing, and shares the causal bias.
        """
        # A traced width may be unknown (None); then the window's bias is built to be safe.
        if window is not None and isinstance(self.length, int) and window >= self.length:
            window = None
        key = window
        if key not in self._bias:
            positions = ops.arange(self.length, dtype="int32")
            distance = positions[:, None] - positions[None, :]
            allowed = distance >= 0
            if key is not None:
                allowed = ops.logical_and(allowed, distance < key)
            keys = ops.cast(self.padding_mask, "bool")[:, None, :]
            allowed = ops.logical_and(allowed[None, :, :], keys)
            bias = ops.where(allowed, 0.0, -1e9)
            self._bias[key] = ops.expand_dims(ops.expand_dims(bias, 1), 3)
        return self._bias[key]

    def rotary(self, rope_layer, head_dim):
        """`(cos, signed_sin)` of shape `(1, length, 1, head_dim)` in float32, from the
        block's own `RotaryEmbedding` settings (its wavelength and scaling); `_rotate`
        takes them. `signed_sin` is `sin` with its first half negated."""
        key = (rope_layer.max_wavelength, rope_layer.scaling_factor)
        if key not in self._rotary:
            # The layer's own tables, so every rope_type keras-hub knows stays exact.
            probe = ops.zeros((1, self.length, 1, head_dim), dtype="float32")
            cos, sin = (ops.cast(table, "float32") for table in rope_layer._compute_cos_sin_embedding(probe))
            self._rotary[key] = (cos, sin * np.repeat(np.float32([-1, 1]), head_dim // 2))
        return self._rotary[key]


def _packed(shape):
    """`shape` for a reshape: a tuple, unless a dim is a tensor (TensorFlow's unknown
    dims while tracing): then one int32 tensor. Torch's symbolic ints stay in the tuple."""
    if not any(ops.is_tensor(dim) for dim in shape):
        return tuple(shape)
    return ops.stack([ops.cast(dim, "int32") for dim in shape])


def _rms_values(x, scale, epsilon):
    """keras-hub's Gemma RMS norm with `scale`, in float32 (its own `call` casts back at once)."""
    x = ops.cast(x, "float32")
    variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(variance + epsilon) * (1.0 + ops.cast(scale, "float32"))


def _rotate(x, cos, signed_sin):
    """keras-hub's rotary embedding, `x * cos + concat(-x2, x1) * sin` for the halves
    `x1, x2` of the last axis, as one roll: the sign lives in `signed_sin` (built once
    per batch), and the same products come out. On TensorFlow the slices and
    concatenation were 17 more graph ops per call to trace."""
    return x * cos + ops.roll(x, x.shape[-1] // 2, axis=-1) * signed_sin


@compiled_on_torch
def _norm(x, scale, epsilon):
    """The block's pre-norm: `x`'s dtype in and out."""
    return ops.cast(_rms_values(x, scale, epsilon), x.dtype)


@compiled_on_torch
def _add_normed(x, y, scale, epsilon):
    """The residual `x + rms(y)`, in `x`'s dtype."""
    return x + ops.cast(_rms_values(y, scale, epsilon), x.dtype)


# GELU's tanh approximation, `0.5 * x * (1 + tanh(z))`, written `x * sigmoid(2 * z)`: the
# same function, and on torch the compiled sigmoid form ran in about half the time of the
# tanh one (docs/performance.md).
_GELU_SCALE = 2.0 * float(np.sqrt(2.0 / np.pi))


@compiled_on_torch
def _gated(gate, up):
    """`gelu(gate) * up`, with GELU's tanh approximation (keras-hub's Gemma)."""
    return gate * ops.sigmoid(_GELU_SCALE * (gate + 0.044715 * gate * gate * gate)) * up


# The query chunks of the causal attention, by the batch's length: `(shortest length, chunks)`.
# A chunk's queries score only the keys up to its own last position (the causal mask hides
# the rest), so `n` chunks compute `(n + 1) / 2n` of the scores. Fewer, larger chunks keep
# the batched matmuls efficient on short batches (docs/performance.md).
_CAUSAL_CHUNKS = ((448, 8), (256, 4), (224, 2), (0, 1))


def causal_chunks(length):
    """How many query chunks `_attend` splits a batch of `length` tokens into: 1 where the
    length is unknown (TensorFlow tracing a batch of any width)."""
    if not isinstance(length, int):
        return 1
    return next(chunks for shortest, chunks in _CAUSAL_CHUNKS if length >= shortest)


@functools.cache
def _attend(chunks=1):
    """The attention segment of a block for `chunks` query chunks (`causal_chunks`): one
    function each, with a code object of its own, so that torch compiles each count's
    loop into its own graphs, within its own budget."""

    def attend(q, k, v, cos, signed_sin, bias, q_scale, k_scale, epsilon, factor, *, shapes=None):
        """Grouped-query attention of projected `q`, `k`, `v` (`(batch, length, heads * head_dim)`),
        with query/key norms and rotary applied here; `(batch, length, n_q * head_dim)` out.

        `shapes` are the batch context's `head_shapes`: on TensorFlow, building them here
        packed seven shapes again in every block (39 graph ops a block of the embedded model).
        Without them (always on torch, where `compiled_on_torch` leaves them out) they are
        read from the tensors."""
        if shapes is None:
            head = cos.shape[-1]
            shapes = _BatchContext(q, None).head_shapes(q.shape[-1] // head, k.shape[-1] // head, head)
        heads_q, heads_kv, grouped, out, queries, scores, weights, mixed = shapes
        dtype = q.dtype
        q = _rotate(_rms_values(ops.reshape(q, heads_q), q_scale, epsilon), cos, signed_sin) * factor
        k = _rotate(_rms_values(ops.reshape(k, heads_kv), k_scale, epsilon), cos, signed_sin)
        # Grouped heads: (batch, kv_heads, length * groups, head) against (batch, kv_heads, head, length).
        q = ops.reshape(ops.transpose(ops.reshape(ops.cast(q, dtype), grouped), (0, 2, 1, 3, 4)), queries)
        k = ops.transpose(ops.cast(k, dtype), (0, 2, 3, 1))
        v = ops.transpose(ops.reshape(v, heads_kv), (0, 2, 1, 3))
        if chunks == 1:
            attention = ops.softmax(ops.cast(ops.reshape(ops.matmul(q, k), scores), "float32") + bias, axis=-1)
            mixed_heads = ops.matmul(ops.reshape(ops.cast(attention, dtype), weights), v)
        else:
            mixed_heads = ops.concatenate([_causal_chunk(q, k, v, bias, part, chunks) for part in range(chunks)], 2)
        return ops.reshape(ops.transpose(ops.reshape(mixed_heads, mixed), (0, 2, 1, 3, 4)), out)

    return compiled_on_torch(with_own_code(attend, f"attend_{chunks}"), tracing_hints=("shapes",))


def _causal_chunk(q, k, v, bias, part, chunks):
    """The attention of the `part`-th of `chunks` runs of positions of grouped queries `q`
    against the keys `k` (`(batch, kv_heads, head, length)`) and values up to its last
    position: `(batch, kv_heads, rows, head)`."""
    batch, kv_heads, head, length = ops.shape(k)
    groups = ops.shape(q)[2] // length
    start, end = length * part // chunks, length * (part + 1) // chunks
    rows = _dense(q[:, :, start * groups : end * groups])
    scores = ops.reshape(ops.matmul(rows, _dense(k[..., :end])), (batch, kv_heads, end - start, groups, end))
    attention = ops.softmax(ops.cast(scores, "float32") + bias[:, :, start:end, :, :end], axis=-1)
    weights = ops.reshape(ops.cast(attention, v.dtype), (batch, kv_heads, (end - start) * groups, end))
    return ops.matmul(weights, _dense(v[:, :, :end]))


def _dense(x):
    """`x` laid out densely on torch, as it is elsewhere. Inductor (torch 2.13) compiled the
    backward of a matmul of a slice whose length is symbolic as if the slice were dense,
    and it failed a stride check at the next length; a dense copy is what it assumed."""
    return x.contiguous() if keras.backend.backend() == "torch" else x


def _project(layer, x, context, layout=None, layer_input=None, training=None):
    """`x @ kernel` for `layer`'s kernel laid out `(in, out)` by `layout` (default: as it
    is), plus the LoRA adapter attached to `layer`, if any, on the input in the layout the
    layer's einsum takes (`layer_input`, default `x`); int8 where the batch's `context`
    says so, and then the float layout is built only when the kernel is quantized."""

    def kernel():
        return layer.kernel if layout is None else layout(layer.kernel)

    if context.int8:
        y = int8_projection(layer, x, kernel)
    else:
        weights = kernel()
        y = _matmul(x, weights, context.shape(weights.shape[-1]))
    adapter = getattr(layer, "kgemma_lora", None)
    if adapter is None:
        return y
    update = adapter(x if layer_input is None else layer_input, training=training)
    return y + ops.cast(ops.reshape(update, context.shape(y.shape[-1])), y.dtype)


def _matmul(x, kernel, shape):
    """`x @ kernel` for `(batch, length, in)` states `x`, as one 2-D matmul, reshaped
    to `shape`. What `ops.matmul` computes, but on TensorFlow that builds a
    `tf.tensordot` with about 20 graph ops of shape arithmetic per projection, and
    tracing time grows with the ops (`tf.einsum`, one op, ran the embedded model's
    forward 25% slower on a CPU)."""
    return ops.reshape(ops.matmul(ops.reshape(x, (-1, x.shape[-1])), kernel), shape)


def _scale(norm):
    return ops.convert_to_tensor(norm.scale)


def _fused_block(block, x, context, training):
    attention = block.attention
    n_q, n_kv, head = attention.num_query_heads, attention.num_key_value_heads, attention.head_dim

    # Attention. Query kernels are (heads, hidden, head_dim): as one (hidden, heads * head_dim) matrix.
    normed = _norm(x, _scale(block.pre_attention_norm), block.pre_attention_norm.epsilon)
    q, k, v = (
        _project(dense, normed, context, _heads_last, training=training)
        for dense in (attention.query_dense, attention.key_dense, attention.value_dense)
    )
    cos, signed_sin = context.rotary(attention.rope_layer, head)
    factor = 1.0 / float(np.sqrt(head if attention.query_head_dim_normalize else attention.hidden_dim // n_q))
    window = attention.sliding_window_size if attention.use_sliding_window_attention else None
    q_norm, k_norm = attention.query_norm, attention.key_norm
    bias = context.attention_bias(window)
    shapes = context.head_shapes(n_q, n_kv, head)
    mixed = _attend(causal_chunks(context.length))(
        q, k, v, cos, signed_sin, bias, _scale(q_norm), _scale(k_norm), q_norm.epsilon, factor, shapes=shapes
    )
    heads_input = ops.reshape(mixed, context.shape(n_q, head))
    attended = _project(attention.output_dense, mixed, context, _heads_first, heads_input, training)
    x = _add_normed(x, attended, _scale(block.post_attention_norm), block.post_attention_norm.epsilon)

    # Feed-forward: gelu(x @ gate) * (x @ up) @ down.
    normed = _norm(x, _scale(block.pre_ffw_norm), block.pre_ffw_norm.epsilon)
    gate = _project(block.gating_ffw, normed, context, training=training)
    up = _project(block.gating_ffw_2, normed, context, training=training)
    down = _project(block.ffw_linear, _gated(gate, up), context, training=training)
    return _add_normed(x, down, _scale(block.post_ffw_norm), block.post_ffw_norm.epsilon)


def _heads_last(kernel):
    """An `(heads, hidden, head_dim)` kernel as `(hidden, heads * head_dim)`."""
    heads, hidden, head = kernel.shape
    return ops.reshape(ops.transpose(kernel, (1, 0, 2)), (hidden, heads * head))


def _heads_first(kernel):
    """An `(heads, head_dim, hidden)` kernel as `(heads * head_dim, hidden)`."""
    return ops.reshape(kernel, (-1, kernel.shape[-1]))

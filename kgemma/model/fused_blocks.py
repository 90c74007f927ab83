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

import contextlib
import functools

import keras
import numpy as np
from keras import ops

from kgemma.model.compiled import compiled_on_torch
from kgemma.model.compiled import with_own_code
from kgemma.model.int8 import check_int8_backend
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
# the batched matmuls efficient on short batches, and few counts keep torch's compiles few:
# each count compiles graphs of its own, and 2 chunks below 256 tokens saved too little
# for theirs (docs/performance.md).
_CAUSAL_CHUNKS = ((448, 8), (256, 4), (0, 1))


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


def _matmul(x, kernel, shape):
    """`x @ kernel` for `(batch, length, in)` states `x`, as one 2-D matmul, reshaped
    to `shape`. What `ops.matmul` computes, but on TensorFlow that builds a
    `tf.tensordot` with about 20 graph ops of shape arithmetic per projection, and
    tracing time grows with the ops (`tf.einsum`, one op, ran the embedded model's
    forward 25% slower on a CPU)."""
    return ops.reshape(ops.matmul(ops.reshape(x, (-1, x.shape[-1])), kernel), shape)


def _scale(norm):
    return ops.convert_to_tensor(norm.scale)


def _block_math(x, norms, project, attend):
    """A Gemma 3 decoder block's function, given how it projects and attends.

    Args:
        x: `(batch, length, hidden)` states.
        norms: `(scale, epsilon)` of the pre- and post-attention and the pre- and
            post-feed-forward norms.
        project: `project(name, inputs)`, the projection `name` (a key of
            `PROJECTIONS`) of `inputs`, LoRA branch included, `(batch, length, out)`.
        attend: `attend(q, k, v)`, the attention of projected heads (`_attend`).
    """
    pre_attention, post_attention, pre_ffw, post_ffw = norms
    normed = _norm(x, *pre_attention)
    q, k, v = (project(name, normed) for name in ("query", "key", "value"))
    x = _add_normed(x, project("output", attend(q, k, v)), *post_attention)
    normed = _norm(x, *pre_ffw)
    down = project("down", _gated(project("gate", normed), project("up", normed)))
    return _add_normed(x, down, *post_ffw)


def _norms(block):
    norms = (block.pre_attention_norm, block.post_attention_norm, block.pre_ffw_norm, block.post_ffw_norm)
    return [(_scale(norm), norm.epsilon) for norm in norms]


def _attention_inputs(attention, context):
    """What `_attend` takes besides the heads, from the block's attention layer and the
    batch's context: its tensors (rotary tables, attention bias, query and key norm
    scales) and its numbers (the norms' epsilon, the query scale)."""
    cos, signed_sin = context.rotary(attention.rope_layer, attention.head_dim)
    window = attention.sliding_window_size if attention.use_sliding_window_attention else None
    n_q, head = attention.num_query_heads, attention.head_dim
    factor = 1.0 / float(np.sqrt(head if attention.query_head_dim_normalize else attention.hidden_dim // n_q))
    bias = context.attention_bias(window)
    return (cos, signed_sin, bias, _scale(attention.query_norm), _scale(attention.key_norm)), (
        attention.query_norm.epsilon,
        factor,
    )


def _fused_block(block, x, context, training):
    if keras.backend.backend() == "torch":
        return _torch_block(block, x, context, training)
    attention = block.attention
    n_q, n_kv, head = attention.num_query_heads, attention.num_key_value_heads, attention.head_dim
    tensors, numbers = _attention_inputs(attention, context)
    shapes = context.head_shapes(n_q, n_kv, head)

    def attend(q, k, v):
        return _attend(causal_chunks(context.length))(q, k, v, *tensors, *numbers, shapes=shapes)

    def project(name, inputs):
        # The output projection's adapter takes the heads apart, as its einsum does.
        layer_input = ops.reshape(inputs, context.shape(n_q, head)) if name == "output" else None
        return _project(_projection(block, name), inputs, context, PROJECTIONS[name][2], layer_input, training)

    return _block_math(x, _norms(block), project, attend)


def _project(layer, x, context, layout=None, layer_input=None, training=None):
    """`x @ kernel` for `layer`'s kernel laid out `(in, out)` by `layout` (default: as it
    is), plus the LoRA adapter attached to `layer`, if any, on the input in the layout the
    layer's einsum takes (`layer_input`, default `x`)."""
    weights = _laid_out(layer.kernel, layout)
    y = _matmul(x, weights, context.shape(weights.shape[-1]))
    adapter = getattr(layer, "kgemma_lora", None)
    if adapter is None:
        return y
    update = adapter(x if layer_input is None else layer_input, training=training)
    return y + ops.cast(ops.reshape(update, context.shape(y.shape[-1])), y.dtype)


def _torch_block(block, x, context, training):
    """`_block_math` on torch, as one function under `torch.compile`, of tensors gathered
    here: the kernels (float, or int8 with their transposes where a gradient flows), the
    LoRA branches (`LoRAAdapter.torch_branch`, this call's dropout seeds drawn here), the
    norm scales, the rotary tables and the attention bias.

    Compiled segment by segment (norms, attention, GELU, each int8 matmul with its
    quantization), a training step wrote every int32 product out, read it back to
    rescale it, wrote it again, and quantized the next input in a pass of its own; as one
    graph, Inductor fuses those passes into the norms, attention and GELU beside them,
    and the LoRA dropout masks into their products (docs/performance.md).
    """
    import torch

    from kgemma.model.int8 import cached_int8_kernel

    gradient = torch.is_grad_enabled()
    projections, lora = {}, {}
    onednn = False
    for name, (_, _, layout) in PROJECTIONS.items():
        layer = _projection(block, name)
        adapter = getattr(layer, "kgemma_lora", None)
        branch = None if adapter is None else adapter.torch_branch(training)
        if adapter is not None:
            lora[name] = (adapter.scale, adapter.dropout)
        if context.int8:
            kernel = functools.partial(_laid_out, layer.kernel, layout)  # called on a cache miss only
            weights = cached_int8_kernel(layer, kernel)
            # The transpose gives the input its gradient; scoring never quantizes it.
            transposed = cached_int8_kernel(layer, kernel, True) if gradient else None
            onednn = weights[0].is_mkldnn
            projections[name] = (weights, transposed, branch)
        else:
            projections[name] = (layer.kernel.value, None, branch)
    if gradient and lora and not x.requires_grad:
        # The lowest adapted block's input (the frozen embeddings' or prefix's output) as
        # the others': one training graph to compile, not two, for the price of an input
        # gradient nobody reads (docs/performance.md).
        x = x.detach().requires_grad_()
    tensors, numbers = _attention_inputs(block.attention, context)
    scales, epsilons = zip(*_norms(block))
    chunks = causal_chunks(context.length)
    key = (
        chunks,
        context.int8,
        onednn,
        epsilons,
        numbers,
        tuple(sorted(lora.items())),
        # Each of these compiles a graph of its own: with a code object each, each has
        # torch's budget of graphs (with_own_code).
        gradient,
        bool(training),
        x.requires_grad,
    )
    # Keras's symbolic build (shapes only, on torch's meta device): nothing to compile.
    meta = x.device.type == "meta"
    if chunks == 1 and not meta:
        _length_symbolic(x, tensors)
    with torch.compiler.set_stance("force_eager") if meta else contextlib.nullcontext():
        return _compiled_block(key)(x, list(scales), tensors, projections)


def _length_symbolic(x, attention_tensors):
    """Mark the length axes of a block's inputs symbolic for torch.compile before it
    compiles: the axes its automatic dynamic shapes mark at a batch's second length
    (`TORCH_LOGS=dynamic` lists them: the states', the rotary tables' and the attention
    bias's with its base's). Left to torch, a run compiles a graph for its first length and
    a symbolic one at the next; this way one symbolic graph serves every length from the
    start. Only for batches of one causal chunk: with chunks, symbolic slice bounds made
    steps ~10% slower than a static graph's, and compiled longer (docs/performance.md)."""
    import torch

    cos, signed_sin, bias = attention_tensors[:3]
    for tensor, axes in ((x, (1,)), (cos, (1,)), (signed_sin, (1,)), (bias, (2, 4)), (bias._base, (1, 2))):
        for axis in axes if tensor is not None else ():
            torch._dynamo.maybe_mark_dynamic(tensor, axis)


def _projection(block, name):
    """The layer of `block`'s projection `name` (a key of `PROJECTIONS`)."""
    owner, attribute, _ = PROJECTIONS[name]
    return getattr(block if owner is None else getattr(block, owner), attribute)


def _laid_out(kernel, layout):
    """`kernel` laid out `(in, out)` by `layout` (a `PROJECTIONS` entry's; None: as it is)."""
    return kernel if layout is None else layout(kernel)


@functools.cache
def _compiled_block(key):
    """The torch block of `_torch_block` for one `key` (its numbers and what compiles
    apart), compiled, under a code object of its own."""
    from kgemma.model.compiled import torch_compiled
    from kgemma.model.int8 import int8_projection
    from kgemma.model.lora import torch_lora_update

    chunks, int8, onednn, epsilons, numbers, lora, *_ = key
    lora = dict(lora)
    attend = _attend(chunks)  # a cached factory, called here: torch.compile would trace it

    def block(x, scales, attention_tensors, projections):
        context = _BatchContext(x, None)  # for reshapes, from the traced batch

        def project(name, inputs):
            kernel, transposed, branch = projections[name]
            if int8:
                y = int8_projection(inputs, kernel, transposed, onednn)
            else:
                weights = _laid_out(kernel, PROJECTIONS[name][2])
                y = _matmul(inputs, weights, context.shape(weights.shape[-1]))
            if branch is None:
                return y
            update = torch_lora_update(inputs, branch, *lora[name], inputs.ndim - 1)
            return y + update.reshape(*inputs.shape[:-1], -1).to(y.dtype)

        def attend_heads(q, k, v):
            return attend(q, k, v, *attention_tensors, *numbers)

        return _block_math(x, list(zip(scales, epsilons)), project, attend_heads)

    return torch_compiled(with_own_code(block, f"fused_block_{abs(hash(key))}"))


def _heads_last(kernel):
    """An `(heads, hidden, head_dim)` kernel as `(hidden, heads * head_dim)`."""
    heads, hidden, head = kernel.shape
    return ops.reshape(ops.transpose(kernel, (1, 0, 2)), (hidden, heads * head))


def _heads_first(kernel):
    """An `(heads, head_dim, hidden)` kernel as `(heads * head_dim, hidden)`."""
    return ops.reshape(kernel, (-1, kernel.shape[-1]))


# A Gemma 3 block's projections by name: `(owner, attribute, layout)`, the layer at
# `block.owner.attribute` (`owner` None: on the block) and the function that lays its
# kernel out `(in, out)` (None: it is already).
PROJECTIONS = {
    "query": ("attention", "query_dense", _heads_last),
    "key": ("attention", "key_dense", _heads_last),
    "value": ("attention", "value_dense", _heads_last),
    "output": ("attention", "output_dense", _heads_first),
    "gate": (None, "gating_ffw", None),
    "up": (None, "gating_ffw_2", None),
    "down": (None, "ffw_linear", None),
}

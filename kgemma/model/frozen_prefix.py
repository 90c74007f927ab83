"""A Gemma backbone run in two parts: a frozen lower prefix and the adapted rest.

When LoRA adapts only the top decoder blocks, the blocks below hold no trainable
weight, so their output for a review never changes while training. `FrozenPrefix`
computes that output (the hidden states entering the first adapted block);
`UpperStack` runs the adapted blocks, the final norm, the pooling and the head on
it. Chained, they compute exactly what the classifier computes, so a trainer can
run the prefix once per review and reuse its states every epoch. `ClassifierForward`
is the two in one, for scoring (and, with int8 projections, for training without a
cached prefix: the classifier's own `call` stays float).

All three run Gemma 3 blocks through `kgemma.model.fused_blocks` (the same function
as keras-hub's blocks, with less work around the matmuls) unless `fused=False`.
"""

from keras import ops

from kgemma.model.fused_blocks import run_blocks
from kgemma.model.fused_blocks import supports_fused
from kgemma.model.int8 import check_int8_backend
from kgemma.model.int8 import int8_is_fastest
from kgemma.model.tracing import AnyWidthModel


def embed_tokens(backbone, token_ids):
    """Token embeddings scaled by sqrt(hidden_dim), as every Gemma backbone does."""
    x = backbone.token_embedding(token_ids)
    return x * ops.cast(ops.sqrt(backbone.hidden_dim), x.dtype)


def _use_fused(backbone, fused):
    """`fused=None` means: wherever the backbone allows it."""
    return supports_fused(backbone) if fused is None else bool(fused) and supports_fused(backbone)


def check_int8(int8, backbone, fused=None):
    """`int8` as a bool, once the backend and `backbone`'s blocks can run it.
    `None`: True where `int8_is_fastest()` and the blocks are fused, else False."""
    if int8 is None:
        return int8_is_fastest() and _use_fused(backbone, fused)
    if int8:
        check_int8_backend()
        if not _use_fused(backbone, fused):
            raise ValueError(
                f"int8 matmuls run in kgemma's fused Gemma 3 blocks only; {type(backbone).__name__} takes keras-hub's."
            )
    return bool(int8)


class FrozenPrefix(AnyWidthModel):
    """Embeddings and the lowest `depth` decoder blocks of a text-only Gemma backbone.

    Args:
        backbone: a `GemmaBackbone` or text-only `Gemma3Backbone`.
        depth: int, the number of lower decoder blocks to run.
        fused: run the blocks fused (`kgemma.model.fused_blocks`); `None`
            (default) wherever the backbone allows it, False for keras-hub's blocks.
        int8: run the blocks' projections as int8 matmuls (`kgemma.model.int8`:
            Keras's torch backend and fused blocks only). Default False.

    Example:
    ```python
    prefix = FrozenPrefix(classifier.backbone, classifier.frozen_depth)
    states = prefix.predict_on_batch(classifier.preprocessor(["Great film."]))
    ```
    """

    def __init__(self, backbone, depth, fused=None, int8=False, **kwargs):
        super().__init__(**{"dtype": backbone.dtype_policy, **kwargs})
        self.backbone = backbone
        self.depth = int(depth)
        self.fused = _use_fused(backbone, fused)
        self.int8 = check_int8(int8, backbone, self.fused)

    def call(self, inputs):
        x = embed_tokens(self.backbone, inputs["token_ids"])
        blocks = self.backbone.transformer_layers[: self.depth]
        return run_blocks(blocks, x, inputs["padding_mask"], fused=self.fused, int8=self.int8)


class UpperStack(AnyWidthModel):
    """The part of a `GemmaSentimentClassifier` above its frozen prefix.

    Takes `{"hidden_states", "padding_mask"}` (the prefix's output) and returns the
    classifier's outputs. It shares every layer and weight with the classifier, so
    training it trains the classifier.

    Args:
        classifier: the `GemmaSentimentClassifier` to split.
        depth: int, where the prefix ends (`classifier.frozen_depth`).
        fused: as in `FrozenPrefix`.
        int8: run the blocks' frozen projections as int8 matmuls, as `FrozenPrefix`
            does; gradients reach the LoRA branches below through int8 matmuls too
            (`kgemma.model.int8.int8_projection`). Default False.
    """

    def __init__(self, classifier, depth, fused=None, int8=False, **kwargs):
        # The backbone's dtype policy: a Keras model casts floating inputs to its own
        # compute dtype, and with the default (float32) a bfloat16 backbone's cached
        # states ran the upper blocks in float32, 1.5x slower than bfloat16 and unlike
        # the inference path (docs/performance.md).
        super().__init__(**{"dtype": classifier.backbone.dtype_policy, **kwargs})
        # Adapters first, then the head: the classifier's own order of trainable weights
        # on TensorFlow and JAX.
        self.lora_adapters = list(classifier.lora_adapters)
        self.blocks = list(classifier.backbone.transformer_layers[int(depth) :])
        self.final_norm = classifier.backbone.layer_norm
        self.pooler = classifier.pooler
        # The head's layers, tracked here so that training this model trains them; the
        # classifier's own `head` runs them.
        self.head_layers = list(classifier.head_layers)
        self.output_dropout = classifier.output_dropout
        self.classifier_head = classifier.head
        self.depth = int(depth)
        self.fused = _use_fused(classifier.backbone, fused)
        self.int8 = check_int8(int8, classifier.backbone, self.fused)

    def call(self, inputs, training=None):
        mask = inputs["padding_mask"]
        x = run_blocks(self.blocks, inputs["hidden_states"], mask, training=training, fused=self.fused, int8=self.int8)
        return self.head(x, mask, training)

    def head(self, x, mask, training=None):
        """The final norm, pooling and head on the last block's states."""
        return self.classifier_head(self.pooler(self.final_norm(x), mask), training=training)


class ClassifierForward(UpperStack):
    """The whole classifier as one model: token inputs to outputs, through fused
    blocks where the backbone allows it. It shares every layer and weight with the
    classifier; `GemmaSentimentClassifier.logits_for_features` scores with it.

    Args:
        classifier: a `GemmaSentimentClassifier`.
        fused: as in `FrozenPrefix`.
        int8: run every block's frozen projections as int8 matmuls, as `FrozenPrefix`
            and `UpperStack` do; the LoRA branches and head stay float.
    """

    def __init__(self, classifier, fused=None, int8=False, **kwargs):
        super().__init__(classifier, classifier.frozen_depth, fused=fused, int8=int8, **kwargs)
        self.backbone = classifier.backbone

    def call(self, inputs, training=None):
        x = embed_tokens(self.backbone, inputs["token_ids"])
        mask = inputs["padding_mask"]
        frozen = self.backbone.transformer_layers[: self.depth]
        x = run_blocks(frozen, x, mask, training=training, fused=self.fused, int8=self.int8)
        # Nothing below trains: without this, TensorFlow's tape traced the gradient through
        # the embedding and the frozen blocks too (unused, but traced on every first step).
        x = ops.stop_gradient(x)
        return super().call({"hidden_states": x, "padding_mask": mask}, training=training)

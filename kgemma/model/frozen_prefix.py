"""A Gemma backbone run in two parts: a frozen lower prefix and the adapted rest.

When LoRA adapts only the top decoder blocks, the blocks below hold no trainable
weight, so their output for a review never changes while training. `FrozenPrefix`
computes that output (the hidden states entering the first adapted block);
`UpperStack` runs the adapted blocks, the final norm, the pooling and the head on
it. Chained, they compute exactly what the classifier computes, so a trainer can
run the prefix once per review and reuse its states every epoch.
"""

import keras
from keras import ops


def embed_tokens(backbone, token_ids):
    """Token embeddings scaled by sqrt(hidden_dim), as every Gemma backbone does."""
    x = backbone.token_embedding(token_ids)
    return x * ops.cast(ops.sqrt(backbone.hidden_dim), x.dtype)


def run_blocks(blocks, x, padding_mask):
    for block in blocks:
        x = block(x, padding_mask=padding_mask)
    return x


class FrozenPrefix(keras.Model):
    """Embeddings and the lowest `depth` decoder blocks of a text-only Gemma backbone.

    Args:
        backbone: a `GemmaBackbone` or text-only `Gemma3Backbone`.
        depth: int, the number of lower decoder blocks to run.

    Example:
    ```python
    prefix = FrozenPrefix(classifier.backbone, classifier.frozen_depth)
    states = prefix.predict_on_batch(classifier.preprocessor(["Great film."]))
    ```
    """

    def __init__(self, backbone, depth, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.depth = int(depth)

    def call(self, inputs):
        x = embed_tokens(self.backbone, inputs["token_ids"])
        return run_blocks(self.backbone.transformer_layers[: self.depth], x, inputs["padding_mask"])


class UpperStack(keras.Model):
    """The part of a `GemmaSentimentClassifier` above its frozen prefix.

    Takes `{"hidden_states", "padding_mask"}` (the prefix's output) and returns the
    classifier's outputs. It shares every layer and weight with the classifier, so
    training it trains the classifier.

    Args:
        classifier: the `GemmaSentimentClassifier` to split.
        depth: int, where the prefix ends (`classifier.frozen_depth`).
    """

    def __init__(self, classifier, depth, **kwargs):
        super().__init__(**kwargs)
        # Adapters first, then the head: the classifier's own order of trainable weights.
        self.lora_adapters = list(classifier.lora_adapters)
        self.blocks = list(classifier.backbone.transformer_layers[int(depth) :])
        self.final_norm = classifier.backbone.layer_norm
        self.pooler = classifier.pooler
        self.head_layers = list(classifier.head_layers)
        self.output_dropout = classifier.output_dropout
        self.depth = int(depth)

    def call(self, inputs, training=None):
        mask = inputs["padding_mask"]
        x = run_blocks(self.blocks, inputs["hidden_states"], mask)
        pooled = self.pooler(self.final_norm(x), mask)
        for layer in self.head_layers[:-1]:
            pooled = layer(pooled)
        return self.head_layers[-1](self.output_dropout(pooled, training=training))

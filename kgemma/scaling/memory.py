"""Memory per device and cost of a LoRA run, estimated from a Gemma config.

Estimates, not measurements: weights and optimizer state are counted exactly;
activations follow Korthikanti et al. (2022, "Reducing Activation Recomputation in
Large Transformer Models"): per layer and sequence, `s*h*(10 + 24/t) + 5*a*s^2/t`
values at 2 bytes, scaled here to the activation dtype (t: model-parallel degree).
docs/scaling.md compares them with a measured run.
"""

from dataclasses import dataclass

GIB = 1024**3

# keras-hub's configs of the Gemma presets docs/scaling.md plans for (Gemma 1 and 2
# give each gating projection half of intermediate_dim; Gemma 3 gives it all).
KNOWN_CONFIGS = {
    "gemma3_270m": dict(
        family=3,
        vocabulary_size=262144,
        num_layers=18,
        num_query_heads=4,
        num_key_value_heads=1,
        hidden_dim=640,
        intermediate_dim=2048,
        head_dim=256,
    ),
    "gemma_2b_en": dict(
        family=1,
        vocabulary_size=256000,
        num_layers=18,
        num_query_heads=8,
        num_key_value_heads=1,
        hidden_dim=2048,
        intermediate_dim=32768,
        head_dim=256,
    ),
    "gemma2_2b_en": dict(
        family=2,
        vocabulary_size=256000,
        num_layers=26,
        num_query_heads=8,
        num_key_value_heads=4,
        hidden_dim=2304,
        intermediate_dim=18432,
        head_dim=256,
    ),
    "gemma_7b_en": dict(
        family=1,
        vocabulary_size=256000,
        num_layers=28,
        num_query_heads=16,
        num_key_value_heads=16,
        hidden_dim=3072,
        intermediate_dim=49152,
        head_dim=256,
    ),
    "gemma2_9b_en": dict(
        family=2,
        vocabulary_size=256000,
        num_layers=42,
        num_query_heads=16,
        num_key_value_heads=8,
        hidden_dim=3584,
        intermediate_dim=28672,
        head_dim=256,
    ),
}

# Which projections each LoRA target set adapts (as kgemma.model.LORA_TARGETS).
_TARGET_PROJECTIONS = {
    "query_value": ("query", "value"),
    "attention": ("query", "key", "value", "output"),
    "all": ("query", "key", "value", "output", "gate", "up", "down"),
}


def projection_shapes(config):
    """(input, output) sizes of each projection of one decoder block."""
    c = config
    ffw = c["intermediate_dim"] // 2 if c.get("family", 3) < 3 else c["intermediate_dim"]
    q, kv = c["num_query_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    h = c["hidden_dim"]
    return {
        "query": (h, q),
        "key": (h, kv),
        "value": (h, kv),
        "output": (q, h),
        "gate": (h, ffw),
        "up": (h, ffw),
        "down": (ffw, h),
    }


def parameter_counts(config, lora_rank=8, lora_targets="query_value", lora_layers=None, num_classes=2):
    """Backbone parameters (embedding, blocks, norms) and trainable LoRA + head ones."""
    shapes = projection_shapes(config)
    h, layers = config["hidden_dim"], config["num_layers"]
    family = config.get("family", 3)
    # Gemma 1 norms before attention and MLP; 2 and 3 after them too; 3 also queries and keys.
    norms = (2 * h if family == 1 else 4 * h) + (2 * config["head_dim"] if family == 3 else 0)
    block = sum(i * o for i, o in shapes.values()) + norms
    embedding = config["vocabulary_size"] * h
    adapted = layers if lora_layers is None else lora_layers
    lora = adapted * sum(
        lora_rank * (i + o) for name, (i, o) in shapes.items() if name in _TARGET_PROJECTIONS[lora_targets]
    )
    head = 2 * h + h * num_classes + num_classes  # Pooled-vector norm and dense head.
    return {"embedding": embedding, "blocks": layers * block + h, "trainable": lora + head}


@dataclass
class MemoryEstimate:
    """Bytes per device; `total` adds them up."""

    weights: int
    trainable_state: int
    activations: int

    @property
    def total(self):
        return self.weights + self.trainable_state + self.activations

    def as_gib(self):
        return {k: round(v / GIB, 2) for k, v in {**self.__dict__, "total": self.total}.items()}


def estimate_memory(
    config,
    batch_size,
    sequence_length,
    weight_bytes=4,
    activation_bytes=None,
    lora_rank=8,
    lora_targets="query_value",
    lora_layers=None,
    data_parallel=1,
    model_parallel=1,
    training=True,
):
    """Memory per device of a LoRA classifier run.

    Args:
        config: a `KNOWN_CONFIGS` entry or a backbone config dict.
        batch_size: the global batch, split over `data_parallel` replicas.
        sequence_length: tokens per review.
        weight_bytes: 4 (float32) or 2 (bfloat16) for the frozen backbone.
        activation_bytes: bytes per activation value (default: `weight_bytes`).
        lora_rank, lora_targets, lora_layers: the LoRA settings.
        data_parallel, model_parallel: the device mesh; weights split over
            `model_parallel` devices, the batch over `data_parallel`.
        training: with `False`, only one block's activations are alive at a time.
    """
    counts = parameter_counts(config, lora_rank, lora_targets, lora_layers)
    weights = (counts["embedding"] + counts["blocks"]) * weight_bytes // model_parallel
    # float32 trainable weights, their gradients and AdamW's two moments.
    trainable = counts["trainable"] * 4 * (4 if training else 1)
    act_bytes = activation_bytes or weight_bytes
    b, s, t = max(batch_size // data_parallel, 1), sequence_length, model_parallel
    h, a = config["hidden_dim"], config["num_query_heads"]
    per_layer = (s * b * h * (10 + 24 / t) + 5 * a * s * s * b / t) * act_bytes / 2
    # Training keeps the activations of the blocks it backpropagates through; the
    # frozen blocks below (lora_layers) and inference keep one block's at a time.
    kept_layers = (config["num_layers"] if lora_layers is None else lora_layers) if training else 1
    return MemoryEstimate(int(weights), int(trainable), int(per_layer * kept_layers))


def training_flops(config, tokens, lora_layers=None):
    """FLOPs of LoRA training on `tokens` tokens: a forward pass (2 per weight per
    token) and, through the adapted blocks, a backward pass for the activations
    only (2 more; frozen weights need no weight gradient)."""
    counts = parameter_counts(config, lora_layers=lora_layers)
    per_block = counts["blocks"] / config["num_layers"]
    adapted = config["num_layers"] if lora_layers is None else lora_layers
    return 2 * counts["blocks"] * tokens + 2 * per_block * adapted * tokens


def estimate_cost(config, tokens, device_tflops, utilization, price_per_hour, devices=1, lora_layers=None):
    """Hours and price of a training run, from FLOPs and an assumed utilization.

    Args:
        tokens: tokens trained on (reviews x epochs x mean tokens per review).
        device_tflops: peak dense TFLOP/s of one device at the run's dtype.
        utilization: the fraction of that peak the run achieves (an assumption;
            docs/scaling.md gives the fraction measured on CPU).
        price_per_hour: price of all `devices` together per hour.
    """
    flops = training_flops(config, tokens, lora_layers)
    hours = flops / (device_tflops * 1e12 * utilization * devices) / 3600
    return {"flops": flops, "hours": hours, "cost": hours * price_per_hour}

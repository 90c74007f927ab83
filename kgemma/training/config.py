"""Training settings, with the fine-tuning report's hyperparameters as defaults."""

import dataclasses
import json
from dataclasses import dataclass

from kgemma.model.dtypes import DTYPE_CHOICES

SCHEDULES = ("constant", "cosine")


@dataclass
class TrainingConfig:
    """How to fine-tune a `GemmaSentimentClassifier`.

    The defaults are the fine-tuning report's recipe (Gemma-2B on IMDB with LoRA,
    named in docs/training.md): LoRA rank 8, alpha 16, dropout 0.1 on
    query and value; AdamW at 2e-4; 3 epochs; gradient accumulation 1; early
    stopping with patience 5 on validation loss, restoring the best weights; a
    stratified 90% / 10% train / validation split.

    Args:
        epochs: passes over the training rows.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        schedule: `"constant"` or `"cosine"` (decay to zero after warmup).
        warmup_steps: optimizer steps of linear warmup from zero.
        batch_size: reviews per step.
        gradient_accumulation_steps: steps whose gradients are summed per update.
        early_stopping_patience: epochs without a better validation loss before stopping.
        validation_fraction: share of the training rows held out for validation.
        max_examples: use a stratified, seeded sample of this many training rows.
        sequence_length: tokens per review, `<bos>` included.
        truncation: `"head"`, `"tail"` or `"head_tail"`.
        pooling: `"mean"` or `"last"`.
        dropout: dropout before the classification head.
        label_smoothing: share of each training label spread evenly over the
            classes (`kgemma.training.loss`); validation loss stays unsmoothed.
        lora_rank, lora_alpha, lora_dropout, lora_targets: the LoRA settings.
        lora_layers: adapt only the top N decoder blocks (`None`: all of them).
        backbone_layers: keep only the backbone's first N decoder blocks (`None`:
            all of them); `lora_layers` then counts from the top of those.
        cache_prefix: with `lora_layers`, compute the frozen lower blocks' output
            once per review and train only the upper blocks and head on it
            (the same computation, run once instead of every epoch).
        jit_compile: compile the train and predict steps with XLA; `None` leaves
            it to Keras (on a CPU-only TensorFlow, no XLA).
        dtype: the backbone's dtype policy: `"auto"` (default: bfloat16 on a CPU
            with AVX512-BF16 or AMX, else float32; `kgemma.model.dtypes`),
            `"bfloat16"`, `"float32"` or another Keras float policy (`None`:
            Keras's float32). LoRA adapters and the head stay float32.
        frozen_int8: run the blocks' frozen projections (LoRA branches and head
            stay float) as int8 matmuls, in training, in the prefix pass and
            whenever the trained model scores
            (`GemmaSentimentClassifier(frozen_int8=...)`): True, False or `None`
            (default: decided by the machine where it is fastest,
            `kgemma.model.int8.int8_is_fastest`).
        seed: seeds the split, the sample, the shuffling and the initial weights.
        checkpoint_every: steps between resumable checkpoints (and at each epoch end).
        drop_overlap: drop training rows whose text also occurs in the evaluation split.
        price_per_hour: optional machine price, for the run summary's cost estimate.
    """

    epochs: int = 3
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    early_stopping_patience: int = 5
    validation_fraction: float = 0.1
    max_examples: int = None
    sequence_length: int = 256
    truncation: str = "head"
    pooling: str = "mean"
    dropout: float = 0.1
    label_smoothing: float = 0.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: str = "query_value"
    lora_layers: int = None
    backbone_layers: int = None
    cache_prefix: bool = True
    jit_compile: bool = None
    dtype: str = "auto"
    frozen_int8: bool = None
    seed: int = 0
    checkpoint_every: int = 25
    drop_overlap: bool = False
    price_per_hour: float = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        if self.frozen_int8 not in (None, True, False):
            raise ValueError(
                f"frozen_int8 must be True, False or None (the machine decides), got {self.frozen_int8!r}."
            )
        if self.dtype not in (None, *DTYPE_CHOICES, "float16", "mixed_bfloat16", "mixed_float16"):
            raise ValueError(f"dtype must be a Keras float dtype policy such as 'bfloat16', got {self.dtype!r}.")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}.")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training settings: {unknown}.")
        return cls(**values)

    def classifier_options(self):
        """The `GemmaSentimentClassifier.from_preset` arguments this config sets."""
        names = (
            "sequence_length",
            "truncation",
            "pooling",
            "dropout",
            "lora_rank",
            "lora_alpha",
            "lora_dropout",
            "lora_targets",
            "lora_layers",
            "backbone_layers",
            "frozen_int8",
        )
        return {name: getattr(self, name) for name in names}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

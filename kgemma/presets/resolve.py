"""Turn the `preset` argument of `from_preset` into something keras-hub can load."""

from pathlib import Path

from kgemma.presets.embedded import EMBEDDED_NAME
from kgemma.presets.embedded import EMBEDDED_PACKAGE
from kgemma.presets.embedded import embedded_preset_dir
from kgemma.presets.embedded import gguf_preset_dir

REMOTE_SCHEMES = ("kaggle://", "hf://", "gs://", "modelscope://")


def known_gemma_presets():
    """keras-hub's built-in preset names for the Gemma backbones kgemma supports."""
    import keras_hub

    names = set(keras_hub.models.GemmaBackbone.presets)
    names |= set(keras_hub.models.Gemma3Backbone.presets)
    return sorted(names)


def preset_catalog():
    """The presets `GemmaSentimentClassifier` loads, as keras-hub lists presets:
    `{name: {"metadata": ..., "kaggle_handle": ...}}`, the embedded model first."""
    import keras_hub

    catalog = {
        EMBEDDED_NAME: {
            "metadata": {
                "description": f"Google's pretrained Gemma 3 270M from the PyPI package {EMBEDDED_PACKAGE}, "
                "converted once and cached; kgemma's default (`from_preset()`), offline.",
                "params": 268098176,
                "path": "gemma3",
            },
            "kaggle_handle": None,
        }
    }
    for backbone_cls in (keras_hub.models.GemmaBackbone, keras_hub.models.Gemma3Backbone):
        catalog.update(backbone_cls.presets)
    return catalog


def resolve_preset(preset=None):
    """Return a preset handle (name, URI or local directory) for keras-hub.

    Args:
        preset: `None` (or `"gemma3_270m_gguf"`) for the embedded Gemma 3 270M; a keras-hub Gemma preset name
            (e.g. `"gemma_2b_en"`); a `kaggle://`, `hf://` or `gs://` handle; a local
            preset directory; or a path to a `.gguf` file.
    """
    if preset is None or preset == EMBEDDED_NAME:
        return str(embedded_preset_dir())
    if not isinstance(preset, (str, Path)):
        raise TypeError(f"preset must be a string or path, got {type(preset).__name__}.")
    preset = str(preset)
    if preset.startswith(REMOTE_SCHEMES):
        return preset
    path = Path(preset).expanduser()
    if preset.lower().endswith(".gguf"):
        return str(gguf_preset_dir(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a keras-hub preset directory (no config.json).")
        return str(path)
    known = known_gemma_presets()
    if preset in known:
        return preset
    raise ValueError(
        f"Unknown preset '{preset}'. Use None for the embedded Gemma 3 270M, a .gguf path, "
        f"a preset directory, a kaggle:// or hf:// handle, or one of: {', '.join(known)}."
    )


def backbone_config(preset=None):
    """The backbone's config dict of a preset, read without building the model."""
    from keras_hub.src.utils.preset_utils import load_json

    return load_json(resolve_preset(preset), "config.json")["config"]

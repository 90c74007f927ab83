"""Where models come from: the embedded GGUF, its conversion and cache, preset names."""

from kgemma.presets.embedded import cache_dir
from kgemma.presets.embedded import embedded_gguf_path
from kgemma.presets.embedded import embedded_preset_dir
from kgemma.presets.embedded import gguf_preset_dir
from kgemma.presets.gguf_conversion import convert_gguf
from kgemma.presets.resolve import backbone_config
from kgemma.presets.resolve import known_gemma_presets
from kgemma.presets.resolve import preset_catalog
from kgemma.presets.resolve import resolve_preset

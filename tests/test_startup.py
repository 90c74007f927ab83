"""kgemma's commands keep TensorFlow's start-up lines out of their output (issue 16, part 4)."""

import subprocess
import sys
from pathlib import Path

import pytest

from kgemma.startup import NOISE
from kgemma.startup import is_quiet_command

TENSORFLOW_STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795767364.061526   18182 port.cc:153] oneDNN custom operations are on. You may see ...",
    "I0000 00:00:1795767364.061902   18182 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...",
    "E0000 00:00:1795767368.306505   18182 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...",
    "E0000 00:00:1795766861.987179   17646 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
    "normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity normalization.",
]


def test_only_known_startup_lines_are_dropped():
    assert all(NOISE.match(line) for line in TENSORFLOW_STARTUP)
    for line in (
        "Error: Invalid value for '--adapter': File 'a.npz' does not exist.",
        "E0000 00:00:1795768861.987179   17646 util.cc:131] Some other oneDNN error.",
        "E0000 00:00:1795768861.987179   17646 bfc_allocator.cc:485] Allocator ran out of memory",
        "UserWarning: Every training review has the same label",
    ):
        assert not NOISE.match(line), line


def test_only_kgemma_commands_without_verbose_are_quieted():
    assert is_quiet_command(["/venv/bin/kgemma-train", "--data", "x"])
    assert is_quiet_command(["kgemma-eval"])
    assert not is_quiet_command(["/venv/bin/kgemma-eval", "--verbose"])
    assert not is_quiet_command(["/usr/bin/python", "script.py"])
    assert not is_quiet_command([])


def command(name):
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.skip(f"{name} is not installed beside {sys.executable}")
    return str(path)


@pytest.mark.slow
def test_a_command_prints_kgemmas_lines_alone(tmp_path):
    def stderr_of(*args):
        return subprocess.run([command("kgemma-eval"), *args], capture_output=True, text=True, timeout=300).stderr

    assert stderr_of("--help") == ""
    verbose = stderr_of("--help", "--verbose")
    assert "oneDNN custom operations are on" in verbose or "cuda" in verbose.lower(), verbose
    # kgemma's own errors still come through the filter, whole.
    error = stderr_of("--adapter", str(tmp_path / "missing.npz"), "--output", str(tmp_path / "out"))
    assert error.endswith("File '" + str(tmp_path / "missing.npz") + "' does not exist.\n"), error
    assert "port.cc" not in error and "cuInit" not in error

"""What a kgemma command does before TensorFlow loads: keep its output kgemma's own.

TensorFlow 2.21 writes a screen of lines to standard error as it loads, before its
logging is set up, so `TF_CPP_MIN_LOG_LEVEL` does not reach them: oneDNN and CPU-feature
notices, "Could not find cuda drivers", and an `E0000 ... failed call to cuInit` line that
looks like a failure on any machine without a GPU. Later come a oneDNN line claiming the
CPU lacks AVX-512 (on CPUs that have it) and SentencePiece's info line from the tokenizer
TensorFlow Text loads; neither has a switch.

So in kgemma's commands (and only there: a Python program that imports kgemma keeps
TensorFlow's output as it is) standard error runs through a filter that drops exactly
those known lines and passes every other line on as it comes; `TF_CPP_MIN_LOG_LEVEL`
defaults to 2 (TensorFlow's C++ errors stay visible; its info and warning lines, such as
grappler's loop-optimizer notes, do not). `--verbose` leaves standard error alone.

This module imports nothing heavy: `kgemma/__init__.py` runs it before Keras.
"""

import atexit
import os
import re
import sys
import threading
from pathlib import Path

# The console scripts setup.cfg declares.
COMMANDS = frozenset({"kgemma-train", "kgemma-eval", "kgemma-predict", "kgemma-launch"})
VERBOSE_FLAG = "--verbose"

# Known lines, matched by their source file (TensorFlow 2.21, TensorFlow Text's SentencePiece).
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor|cuda_diagnostics)"
    r"\.cc:\d+\]"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\."
    r"|E\d{4} [\d:.]+ +\d+ util\.cc:\d+\] oneDNN supports DT_INT64 only on platforms with AVX-512\."
    r"|normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty\.)"
)


def is_quiet_command(argv=None):
    """True when this process is one of kgemma's commands run without `--verbose`."""
    argv = sys.argv if argv is None else argv
    return bool(argv) and Path(argv[0]).name in COMMANDS and VERBOSE_FLAG not in argv[1:]


def quiet_command_output(argv=None):
    """In kgemma's commands, filter the known library lines out of standard error
    (file descriptor 2, where C++ code writes) for the rest of the process; elsewhere
    do nothing. Returns whether the filter is on."""
    if not is_quiet_command(argv):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_pass_on, args=(read_end, terminal), name="kgemma-stderr", daemon=True)
    thread.start()

    def restore():
        # Give fd 2 back, so the pipe sees its end and the thread writes what is left.
        sys.stderr.flush()
        os.dup2(terminal, 2)
        thread.join(timeout=5)

    atexit.register(restore)
    return True


def _pass_on(read_end, terminal):
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not NOISE.match(line.decode(errors="replace")):
                os.write(terminal, line)

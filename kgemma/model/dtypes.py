"""The backbone's dtype: the choices kgemma offers, and `"auto"`, the fastest on this CPU.

bfloat16 halves the frozen Gemma's matmul time only where the CPU multiplies bfloat16 in
hardware: AMX (`amx_bf16`) or AVX512-BF16 (`avx512_bf16`). There TensorFlow's bfloat16
matmul ran at 415 GFLOP/s against float32's 211 (docs/performance.md, AVX512-BF16 without
AMX); on the project's first machines, with neither, bfloat16 was no faster than float32
and only lost precision. So `"auto"` asks the CPU, and falls back to float32 where it
cannot tell (no /proc/cpuinfo: macOS, Windows).
"""

from pathlib import Path

# The dtypes the CLIs and recipes offer (the library takes any Keras float policy).
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
# CPU flags (as Linux names them) of bfloat16 matrix instructions.
BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags():
    """The instruction-set flags of this machine's CPU (empty where the OS does not say)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def fastest_dtype():
    """`"bfloat16"` on a CPU with bfloat16 matrix instructions, else `"float32"`."""
    return "bfloat16" if cpu_flags() & set(BFLOAT16_CPU_FLAGS) else "float32"


def resolve_dtype(dtype):
    """The dtype policy name to build with: `"auto"` becomes `fastest_dtype()`;
    anything else (`None`, for Keras's default float32, included) is kept."""
    return fastest_dtype() if dtype == "auto" else dtype

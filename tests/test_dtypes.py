import json

import pytest

from kgemma.model import dtypes
from tests.conftest import train_cli_args

READ_CPU_FLAGS = dtypes.cpu_flags  # conftest.py replaces it in every test


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),  # AVX512-BF16 (AMD Zen 4, Cooper Lake)
        ({"avx512f", "amx_tile", "amx_bf16", "amx_int8"}, "bfloat16"),  # AMX (Sapphire Rapids)
        ({"avx2", "avx512f", "avx512_vnni"}, "float32"),  # AVX-512 without bfloat16
        (set(), "float32"),  # an OS that does not say
    ],
)
def test_auto_picks_bfloat16_only_where_the_cpu_multiplies_it(monkeypatch, flags, expected):
    monkeypatch.setattr(dtypes, "cpu_flags", lambda: frozenset(flags))
    assert dtypes.resolve_dtype("auto") == expected
    assert dtypes.resolve_dtype("float32") == "float32" and dtypes.resolve_dtype(None) is None


def test_cpu_flags_reads_the_flags_line(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx512_bf16 avx2\n\n")
    monkeypatch.setattr(dtypes, "cpu_flags", READ_CPU_FLAGS)
    monkeypatch.setattr(dtypes, "CPUINFO", cpuinfo)
    assert dtypes.cpu_flags() == {"fpu", "sse", "avx512_bf16", "avx2"}
    monkeypatch.setattr(dtypes, "CPUINFO", tmp_path / "missing")
    assert dtypes.cpu_flags() == frozenset()


@pytest.mark.slow  # runs kgemma-train
def test_kgemma_train_defaults_to_auto_and_records_what_it_chose(monkeypatch, tiny_preset, data_file, tmp_path):
    from click.testing import CliRunner

    from kgemma import GemmaSentimentClassifier
    from kgemma.cli.train import main as train_main
    from kgemma.training import TrainingConfig

    assert TrainingConfig().dtype == "auto"
    monkeypatch.setattr(dtypes, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    out = tmp_path / "run"
    args = train_cli_args(tiny_preset, data_file, out, "--epochs", "1", "--max-examples", "40", "--no-save-keras")
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "run.json").read_text())["config"]
    assert recorded["dtype"] == "bfloat16"
    assert recorded["frozen_int8"] is False  # recorded as what the machine chose: off on TensorFlow
    assert GemmaSentimentClassifier.from_adapter(out / "adapter.npz").backbone.dtype_policy.name == "bfloat16"

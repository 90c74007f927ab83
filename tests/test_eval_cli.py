import json

import pytest
from click.testing import CliRunner

from kgemma.cli.evaluate import main as eval_main
from kgemma.cli.train import main as train_main
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def tiny_run(tiny_preset, review_rows, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_cli")
    data = write_jsonl(folder / "train.jsonl", review_rows[:160])
    test = write_jsonl(folder / "test.jsonl", review_rows[160:])
    run = folder / "run"
    args = ["--preset", str(tiny_preset), "--data", str(data), "--output", str(run), "--sequence-length", "32",
            "--batch-size", "8", "--epochs", "1", "--learning-rate", "1e-2", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    return run, test


def test_eval_writes_the_report(tiny_run, tmp_path):
    run, test = tiny_run
    original, edited = tmp_path / "original.tsv", tmp_path / "edited.tsv"
    original.write_text("Sentiment\tText\nPositive\tA wonderful film.\nNegative\tDull and long.\n")
    edited.write_text("Sentiment\tText\nNegative\tA dreadful film.\nPositive\tShort and sharp.\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        eval_main,
        ["--adapter", str(run / "adapter.npz"), "--data", str(test), "--output", str(out),
         "--contrast", str(original), str(edited), "--slice", "review_word=review", "--temperature-scaling"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "review_word" in result.output and "consistency" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 80 and metrics["slices"]["review_word"]["n"] == 80
    assert metrics["calibration"]["temperature"] > 0
    assert metrics["baseline"]["train_rows"] == 144  # the run's own training rows
    assert metrics["contrast"][0]["n_pairs"] == 2
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 80
    for name in ("report.md", "report.html", "learning_curves.png"):
        assert (out / name).is_file()


def test_eval_of_a_keras_file(tiny_run, tmp_path):
    run, test = tiny_run
    out = tmp_path / "eval"
    result = CliRunner().invoke(eval_main, ["--model", str(run / "model.keras"), "--data", str(test), "--output", str(out), "--max-examples", "20", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["overall"]["n"] == 20
    assert not (out / "report.html").exists()


def test_eval_errors(tiny_run, tmp_path):
    run, test = tiny_run
    runner = CliRunner()
    missing = runner.invoke(eval_main, ["--model", str(tmp_path / "nope.keras"), "--output", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "nope.keras" in missing.output
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip")
    result = runner.invoke(eval_main, ["--model", str(corrupt), "--data", str(test), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Could not load the model" in result.output and "corrupt.keras" in result.output
    assert "Traceback" not in result.output
    both = runner.invoke(eval_main, ["--model", str(corrupt), "--adapter", str(run / "adapter.npz"), "--data", str(test), "--output", str(tmp_path / "o")])
    assert both.exit_code == 2 and "exactly one of --model or --adapter" in both.output
    bad_slice = runner.invoke(eval_main, ["--adapter", str(run / "adapter.npz"), "--slice", "noequals", "--output", str(tmp_path / "o")])
    assert bad_slice.exit_code == 2 and "NAME=REGEX" in bad_slice.output
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_bytes(b'{"text": "x", "label": 1}\n{"text": "\xff", "label": 0}\n')
    result = runner.invoke(eval_main, ["--adapter", str(run / "adapter.npz"), "--data", str(bad_data), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1 and "bad.jsonl, line 2: not valid UTF-8" in result.output

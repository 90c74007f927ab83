import json

import pytest
from click.testing import CliRunner

from kgemma.cli.evaluate import main as eval_main
from kgemma.cli.train import main as train_main
from tests.conftest import write_jsonl

# Each runs a command-line tool or a subprocess end to end: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tiny_preset, review_rows, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_cli")
    data = write_jsonl(folder / "train.jsonl", review_rows[:160])
    test = write_jsonl(folder / "test.jsonl", review_rows[160:])
    run = folder / "run"
    args = [
        "--preset",
        str(tiny_preset),
        "--data",
        str(data),
        "--output",
        str(run),
        "--sequence-length",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--learning-rate",
        "1e-2",
        "--quiet",
    ]
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
        [
            "--adapter",
            str(run / "adapter.npz"),
            "--data",
            str(test),
            "--output",
            str(out),
            "--contrast",
            str(original),
            str(edited),
            "--slice",
            "review_word=review",
            "--temperature-scaling",
            "--explain",
            "2",
        ],
    )
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
    # --explain 2: the first two mistakes of each list, and both contrast pairs with the edit found.
    for mistakes in [metrics["mistakes"]["overall"], *metrics["mistakes"]["per_slice"].values()]:
        assert all(("explanation" in m) == (i < 2) for i, m in enumerate(mistakes))
    explained = metrics["mistakes"]["overall"][0]["explanation"]
    assert explained["method"] == "occlusion" and len(explained["words"]) == len(explained["scores"]) > 1
    pairs = {p["index"]: p for p in metrics["contrast"][0]["explained_pairs"]}
    assert sorted(pairs) == [0, 1]
    assert [pairs[0][side]["words"][i] for side in ("original", "edited") for i in pairs[0][side]["edited"]] == [
        " wonderful",
        " dreadful",
    ]
    assert pairs[1]["edited"]["label"] == "positive" and pairs[1]["original"]["label"] == "negative"
    assert "occlusion: for *" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert page.count("text-decoration:underline") == 6 and "background:rgba(" in page


def test_eval_of_a_keras_file(tiny_run, tmp_path):
    run, test = tiny_run
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        eval_main,
        [
            "--model",
            str(run / "model.keras"),
            "--data",
            str(test),
            "--output",
            str(out),
            "--max-examples",
            "20",
            "--format",
            "json",
        ],
    )
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
    both = runner.invoke(
        eval_main,
        [
            "--model",
            str(corrupt),
            "--adapter",
            str(run / "adapter.npz"),
            "--data",
            str(test),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert both.exit_code == 2 and "exactly one of --model or --adapter" in both.output
    bad_slice = runner.invoke(
        eval_main, ["--adapter", str(run / "adapter.npz"), "--slice", "noequals", "--output", str(tmp_path / "o")]
    )
    assert bad_slice.exit_code == 2 and "NAME=REGEX" in bad_slice.output
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_bytes(b'{"text": "x", "label": 1}\n{"text": "\xff", "label": 0}\n')
    result = runner.invoke(
        eval_main, ["--adapter", str(run / "adapter.npz"), "--data", str(bad_data), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "bad.jsonl, line 2: not valid UTF-8" in result.output


def test_sharded_evaluation_merges_into_the_single_run_report(tiny_run, tmp_path):
    run, test = tiny_run
    runner = CliRunner()
    common = ["--data", str(test), "--max-examples", "50", "--format", "json"]
    single = tmp_path / "single"
    assert (
        runner.invoke(eval_main, ["--adapter", str(run / "adapter.npz"), *common, "--output", str(single)]).exit_code
        == 0
    )
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, folder in enumerate(shards):
        result = runner.invoke(
            eval_main, ["--adapter", str(run / "adapter.npz"), *common, "--shard", f"{i}/3", "--output", str(folder)]
        )
        assert result.exit_code == 0, result.output
        assert len((folder / "predictions.jsonl").read_text().splitlines()) == len(range(i, 50, 3))
        assert not (folder / "metrics.json").exists()

    incomplete = runner.invoke(
        eval_main, [*common, "--merge", str(shards[0]), "--merge", str(shards[2]), "--output", str(tmp_path / "bad")]
    )
    assert incomplete.exit_code == 1 and "not one complete set" in incomplete.output
    other_rows = runner.invoke(
        eval_main,
        [
            "--data",
            str(test),
            "--max-examples",
            "40",
            *[a for s in shards for a in ("--merge", str(s))],
            "--output",
            str(tmp_path / "bad"),
        ],
    )
    assert other_rows.exit_code == 1 and "these data have 40" in other_rows.output

    merged = tmp_path / "merged"
    result = runner.invoke(
        eval_main, [*common, *[a for s in shards for a in ("--merge", str(s))], "--output", str(merged)]
    )
    assert result.exit_code == 0, result.output
    expected, got = (json.loads((f / "metrics.json").read_text()) for f in (single, merged))
    # Same rows, same predictions: counts and accuracies equal; probability-based figures
    # equal up to float rounding (a row's logits differ by ~1e-7 across batch widths).
    assert got["overall"]["accuracy"] == expected["overall"]["accuracy"]
    assert_same_numbers(got["overall"], expected["overall"])
    assert_same_numbers(got["slices"], expected["slices"])
    assert_same_numbers(got["calibration"], expected["calibration"])
    assert got["baseline"] == expected["baseline"] and got["model"]["settings"] == expected["model"]["settings"]


def assert_same_numbers(got, expected, where="metrics"):
    if isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_same_numbers(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same_numbers(g, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), where
    else:
        assert got == expected, where


def test_bad_shard_specs_are_refused(tiny_run, tmp_path):
    run, test = tiny_run
    result = CliRunner().invoke(
        eval_main,
        ["--adapter", str(run / "adapter.npz"), "--data", str(test), "--shard", "3/3", "--output", str(tmp_path / "o")],
    )
    assert result.exit_code == 1 and "A shard is I/N with 0 <= I < N" in result.output


def test_eval_distribution_options_say_what_they_need(tiny_run, tmp_path):
    run, test = tiny_run
    common = ["--adapter", str(run / "adapter.npz"), "--data", str(test), "--output", str(tmp_path / "o")]
    data = CliRunner().invoke(eval_main, [*common, "--distribution", "data"])
    assert data.exit_code == 2 and "--shard I/N" in data.output
    model = CliRunner().invoke(eval_main, [*common, "--distribution", "model"])
    assert model.exit_code == 1 and "needs the JAX backend" in model.output


def test_run_evaluation_gives_the_cli_report_in_one_call(tiny_run, tmp_path):
    from kgemma import GemmaSentimentClassifier
    from kgemma.data import load_imdb
    from kgemma.evaluation import classifier_scorer
    from kgemma.evaluation import run_evaluation

    run, test = tiny_run
    cli = CliRunner().invoke(
        eval_main,
        [
            "--adapter",
            str(run / "adapter.npz"),
            "--data",
            str(test),
            "--output",
            str(tmp_path / "cli"),
            "--no-baseline",
            "--format",
            "json",
        ],
    )
    assert cli.exit_code == 0, cli.output
    clf = GemmaSentimentClassifier.from_adapter(run / "adapter.npz")
    metrics = run_evaluation(
        load_imdb("test", str(test)),
        classifier_scorer(clf),
        tmp_path / "python",
        model_info={"settings": clf.rebuild_config()},
        formats=("json",),
    )
    assert metrics["overall"]["n"] == 80
    expected, got = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("cli", "python"))
    for part in ("overall", "calibration", "slices", "mistakes"):
        assert got[part] == expected[part], part

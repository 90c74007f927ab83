"""kgemma-predict and what it stands on: unlabelled inputs, scores written as they come (issue 16, part 1)."""

import csv
import gzip
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kgemma.data.unlabelled import read_texts
from kgemma.prediction import predict_to_file
from tests.conftest import CORPUS
from tests.conftest import randomize_head


def test_inputs_of_every_kind_keep_their_lines_and_name_their_bad_rows(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_bytes(b"A fine film.\n\n  \nBad \xff byte.\nDull.\n")
    jsonl = tmp_path / "b.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.write('{"body": "Loved it.", "sku": "x1"}\n\n{"body": 3}\nnot json\n{"other": "y"}\n{"body": "Meh."}\n')
    table = tmp_path / "c.tsv"
    table.write_text('body\tsku\n"Two\nlines."\tz9\n\tz10\nShort.\t\n')
    rows, bad = read_texts([str(txt), str(jsonl), str(table)], text_field="body", id_field="sku")
    assert [(r.source, r.line, r.id, r.text) for r in rows] == [
        (str(txt), 1, "1", "A fine film."),
        (str(txt), 5, "5", "Dull."),
        (str(jsonl), 1, "x1", "Loved it."),
        (str(jsonl), 6, "6", "Meh."),
        (str(table), 3, "z9", "Two\nlines."),
        (str(table), 5, "5", "Short."),
    ]
    assert [str(b) for b in bad] == [
        f"{txt}, line 2: empty text",
        f"{txt}, line 3: empty text",
        f"{txt}, line 4: not valid UTF-8 (invalid start byte at byte 4)",
        f"{jsonl}, line 3: a non-string 'body' field",
        f"{jsonl}, line 4: not valid JSON (Expecting value)",
        f"{jsonl}, line 5: no 'body' field",
        f"{table}, line 4: empty text",
    ]
    with pytest.raises(ValueError, match=r"no 'text' column \(columns: \['body', 'sku'\]\)"):
        read_texts([str(table)])
    with pytest.raises(ValueError, match="unknown file type '.docx'"):
        read_texts([str(tmp_path / "d.docx")])
    with pytest.raises(FileNotFoundError, match="Input file not found"):
        read_texts([str(tmp_path / "missing.txt")])


@pytest.fixture
def scored_inputs(make_classifier, tmp_path):
    path = tmp_path / "reviews.txt"
    # Varied lengths, a few over the 32-token sequence, so some are truncated.
    path.write_text("".join(" ".join(CORPUS[: 1 + i % 4]) + f" Review {i}.\n" for i in range(11)))
    rows, bad = read_texts([str(path)])
    assert not bad
    return randomize_head(make_classifier()), rows


@pytest.mark.parametrize("name", ["scores.jsonl", "scores.csv"])
def test_scores_are_predict_proba_in_input_order_and_a_killed_run_resumes(scored_inputs, tmp_path, name):
    clf, rows = scored_inputs
    path = tmp_path / name
    assert predict_to_file(clf, rows, path, batch_size=4, chunk_size=4) == 11
    saved = read_scores(path)
    expected = clf.predict_proba([r.text for r in rows])
    counts = clf.preprocessor.token_counts([r.text for r in rows])
    assert [(r["line"], r["id"]) for r in saved] == [(r.line, r.id) for r in rows]
    np.testing.assert_allclose([r["p_positive"] for r in saved], expected[:, 1], atol=1e-6)
    assert [r["label"] for r in saved] == [["negative", "positive"][int(p.argmax())] for p in expected]
    assert [r["n_tokens"] for r in saved] == counts
    assert [int(r["tokens_read"]) for r in saved] == [min(c, 31) for c in counts]
    assert [r["truncated"] for r in saved] == [c > 31 for c in counts] and any(c > 31 for c in counts)

    # A run killed after 5 rows, in the middle of writing the sixth, goes on from there.
    lines = path.read_text().splitlines(keepends=True)
    kept = 6 if name.endswith(".csv") else 5  # the CSV header
    path.write_text("".join(lines[:kept]) + lines[kept][:10])
    assert predict_to_file(clf, rows, path, batch_size=4, chunk_size=4) == 6
    resumed = read_scores(path)
    assert path.read_text().startswith("".join(lines[:kept]))
    # Rows 6-11 are batched otherwise now: the same scores, to float rounding.
    np.testing.assert_allclose([r["p_positive"] for r in resumed], [r["p_positive"] for r in saved], atol=1e-6)
    assert [(r["line"], r["sha1"], r["n_tokens"]) for r in resumed] == [
        (r["line"], r["sha1"], r["n_tokens"]) for r in saved
    ]
    assert predict_to_file(clf, rows, path) == 0

    with pytest.raises(ValueError, match="holds scores of other inputs"):
        predict_to_file(clf, rows[1:], path)
    other = randomize_head(clf, seed=1)
    with pytest.raises(ValueError, match="holds predictions from another model"):
        predict_to_file(other, rows, path)


def read_scores(path):
    """Saved rows, with CSV's strings and JSONL's nesting made alike."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return [
                {**r, "line": int(r["line"]), "n_tokens": int(r["n_tokens"]), "truncated": r["truncated"] == "True"}
                | {"p_positive": float(r["p_positive"])}
                for r in csv.DictReader(f)
            ]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{**r, "p_positive": r["probabilities"]["positive"]} for r in rows]


@pytest.mark.slow
def test_kgemma_predict_scores_files_and_reports_bad_rows(tiny_preset, tmp_path):
    from kgemma import GemmaSentimentClassifier
    from kgemma.cli.predict import main as predict_main

    keras.utils.set_random_seed(0)
    clf = randomize_head(GemmaSentimentClassifier.from_preset(str(tiny_preset), sequence_length=32))
    adapter = tmp_path / "a.npz"
    clf.save_adapter(adapter)
    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes(b"A wonderful film.\n\xff\xfe\nDull and long.\n")
    out = tmp_path / "scores.jsonl"
    args = ["--adapter", str(adapter), str(reviews), "--output", str(out), "--quiet"]
    strict = CliRunner().invoke(predict_main, [*args, "--strict"])
    assert strict.exit_code == 1 and "Error: 1 bad rows (first: " in strict.output and not out.exists()
    result = CliRunner().invoke(predict_main, args)
    assert result.exit_code == 0, result.output
    assert f"{reviews}, line 2: not valid UTF-8" in result.output
    assert "Scored 2 reviews into" in result.output and "skipped 1 bad rows" in result.output
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    expected = clf.predict_proba(["A wonderful film.", "Dull and long."])
    assert [r["line"] for r in saved] == [1, 3]
    np.testing.assert_allclose([r["probabilities"]["positive"] for r in saved], expected[:, 1], atol=1e-6)
    again = CliRunner().invoke(predict_main, args)
    assert again.exit_code == 0 and "Scored 0 reviews" in again.output and "2 were there" in again.output

import json

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import metrics as skm

from kgemma.data import Reviews
from kgemma.evaluation import BUILTIN_SLICES
from kgemma.evaluation import apply_temperature
from kgemma.evaluation import classification_metrics
from kgemma.evaluation import confident_mistakes
from kgemma.evaluation import contrast_metrics
from kgemma.evaluation import custom_slice
from kgemma.evaluation import evaluate_predictions
from kgemma.evaluation import expected_calibration_error
from kgemma.evaluation import fit_temperature
from kgemma.evaluation import read_contrast
from kgemma.evaluation import stream_predictions
from kgemma.evaluation import write_report

SLICES = {s.name: s for s in BUILTIN_SLICES}


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    p1 = np.clip(0.5 + (y - 0.5) * rng.uniform(-0.4, 0.9, size=200), 0.01, 0.99)
    return y, np.stack([1 - p1, p1], axis=1)


def test_metrics_equal_scikit_learn(predictions):
    y, proba = predictions
    m = classification_metrics(y, proba)
    pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["per_class"]["positive"]["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["per_class"]["negative"]["recall"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, proba[:, 1]))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]))
    low, high = m["accuracy_ci95"]
    assert low < m["accuracy"] < high and high - low < 0.2
    np.testing.assert_allclose(np.array(m["confusion_matrix_normalized"]).sum(axis=1), 1.0)


def test_bootstrap_statistics_equal_scikit_learn_on_every_resample():
    from scipy import stats

    from kgemma.evaluation.metrics import accuracy
    from kgemma.evaluation.metrics import bootstrap_interval
    from kgemma.evaluation.metrics import macro_f1

    rng = np.random.default_rng(3)
    for n in (2, 5, 40):
        y = rng.integers(0, 2, size=n)
        pred = np.where(rng.random(n) < 0.8, y, 1 - y)
        resamples = rng.integers(0, n, size=(100, n))  # many hold a single class
        expected = [skm.f1_score(y[r], pred[r], average="macro", zero_division=0) for r in resamples]
        assert macro_f1(y[resamples], pred[resamples]).tolist() == expected  # to the last bit
        assert accuracy(y[resamples], pred[resamples]).tolist() == [
            skm.accuracy_score(y[r], pred[r]) for r in resamples
        ]

        def sklearn_f1(a, b):
            return skm.f1_score(a, b, average="macro", zero_division=0)

        one_by_one = stats.bootstrap(
            (y, pred),
            sklearn_f1,
            paired=True,
            vectorized=False,
            n_resamples=100,
            confidence_level=0.95,
            method="percentile",
            rng=np.random.default_rng(0),
        )
        assert bootstrap_interval(y, pred, macro_f1, n_resamples=100) == [
            float(v) for v in one_by_one.confidence_interval
        ]
    assert bootstrap_interval([1, 1, 1], [1, 1, 1], macro_f1) is None
    assert bootstrap_interval([1], [0], accuracy) is None


def test_ece_on_a_hand_computed_case():
    # Bin (0.6, 0.667]: confidences 0.6, 0.6 (one right) -> |0.5 - 0.6| = 0.1, weight 2/4.
    # Bin (0.867, 0.933]: confidences 0.9, 0.9 (both right) -> |1.0 - 0.9| = 0.1, weight 2/4.
    proba = np.array([[0.6, 0.4], [0.4, 0.6], [0.9, 0.1], [0.1, 0.9]])
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, proba) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=2000)
    true_logits = np.stack([np.zeros(2000), (2 * y - 1) * 1.0 + rng.normal(0, 1.5, 2000)], axis=1)
    overconfident = true_logits * 4.0
    t = fit_temperature(overconfident, y)
    assert 3.0 < t < 5.5
    before = expected_calibration_error(y, softmax(overconfident, axis=1))
    after = expected_calibration_error(y, apply_temperature(overconfident, t))
    assert after < before / 3


@pytest.mark.parametrize(
    "name,hits,misses",
    [
        (
            "negation",
            ["It was not bad at all.", "Never boring.", "I didn't like it."],
            ["A bad, bad film.", "Nothing happens, ever."],
        ),
        (
            "mixed",
            ["Great cast, but the plot was awful.", "Although the music is beautiful, it is boring."],
            ["Great cast and a great plot.", "Awful, but short."],
        ),
        (
            "sarcasm_cues",
            [
                "A masterpiece (not).",
                "Oh great, another remake.",
                "Yeah right, best film ever.",
                'The "acting" was something.',
                "Thanks for nothing, Hollywood.",
            ],
            ["A masterpiece.", "Great, I loved it.", "The acting was right on."],
        ),
    ],
)
def test_text_slices_hit_and_miss(name, hits, misses):
    for text in hits:
        assert SLICES[name]({"text": text}), text
    for text in misses:
        assert not SLICES[name]({"text": text}), text


def test_rating_length_and_truncation_slices():
    row = {"text": "word " * 10, "rating": 7, "n_tokens": 300, "sequence_length": 256}
    assert SLICES["borderline_rating"](row) and SLICES["short"](row) and SLICES["truncated"](row)
    row = {"text": "word " * 100, "rating": 10, "n_tokens": 255, "sequence_length": 256}
    assert not (SLICES["borderline_rating"](row) or SLICES["short"](row) or SLICES["truncated"](row))
    assert not SLICES["borderline_rating"]({"text": "x", "rating": None})


def test_custom_slices_from_regex_or_callable():
    assert custom_slice("spoilers", r"\bspoilers?\b")({"text": "SPOILER ahead"})
    assert custom_slice("rated_one", lambda row: row["rating"] == 1)({"text": "", "rating": 1})
    with pytest.raises(TypeError, match="regular expression or a callable"):
        custom_slice("bad", 3)


def test_contrast_pairs_from_tsv_and_jsonl(tmp_path):
    (tmp_path / "original.tsv").write_text('Sentiment\tText\nPositive\tA "great" film.\nNegative\tDull.\n')
    (tmp_path / "edited.tsv").write_text("Sentiment\tText\nNegative\tA dull film.\nPositive\tThrilling.\n")
    original, edited = read_contrast([tmp_path / "original.tsv", tmp_path / "edited.tsv"])
    assert original.texts == ['A "great" film.', "Dull."] and edited.labels.tolist() == [0, 1]
    m = contrast_metrics(original.labels, [1, 0], edited.labels, [1, 1])
    assert m == {
        "n_pairs": 2,
        "labels_flipped": 2,
        "original_accuracy": 1.0,
        "edited_accuracy": 0.5,
        "consistency": 0.5,
    }
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"original": "Good.", "original_label": "positive", "edited": "Bad.", "edited_label": 0}) + "\n"
    )
    original, edited = read_contrast([pairs])
    assert original.labels.tolist() == [1] and edited.texts == ["Bad."]
    (tmp_path / "short.tsv").write_text("Sentiment\tText\nPositive\tx\n")
    with pytest.raises(ValueError, match="aligned row by row"):
        read_contrast([tmp_path / "original.tsv", tmp_path / "short.tsv"])


def test_confident_mistakes_are_sorted_and_excerpted():
    reviews = Reviews(["a " * 400, "b", "c", "d"], [1, 0, 1, 0])
    proba = np.array([[0.99, 0.01], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    mistakes = confident_mistakes(reviews, proba, k=5)
    assert [m["index"] for m in mistakes] == [0, 1]
    assert mistakes[0]["predicted"] == "negative" and len(mistakes[0]["excerpt"]) <= 300


def test_predictions_stream_resumes_without_rescoring(tmp_path):
    reviews = Reviews([f"review {i}" for i in range(10)], [i % 2 for i in range(10)])
    calls = []

    def score(texts):
        calls.append(len(texts))
        return np.array([[0.0, float(t.split()[1])] for t in texts]), [2] * len(texts)

    path = tmp_path / "predictions.jsonl"
    stream_predictions(path, reviews.subset(range(4)), score, chunk_size=3)
    # An interruption mid-write leaves a torn last line.
    path.write_text(path.read_text() + '{"index": 4, "id"')
    calls.clear()
    logits, n_tokens = stream_predictions(path, reviews, score, chunk_size=3)
    assert calls == [3, 3]  # only rows 4..9
    np.testing.assert_array_equal(logits[:, 1], np.arange(10))
    assert len(path.read_text().splitlines()) == 10
    other = Reviews([f"other {i}" for i in range(10)], [0] * 10)
    with pytest.raises(ValueError, match="predictions for other data"):
        stream_predictions(path, other, score)


@pytest.mark.slow  # About 20-40 s: left out of `make test-fast`.
def test_evaluation_report_files_hold_what_they_claim(tmp_path, predictions):
    y, proba = predictions
    texts = [
        "Not bad, but a great cast cannot save an awful ending." if i % 10 == 0 else f"Review number {i} was fine."
        for i in range(200)
    ]
    reviews = Reviews(texts, y, ratings=[4 if i % 7 == 0 else 9 for i in range(200)])
    logits = np.log(proba)
    metrics = evaluate_predictions(
        reviews,
        logits,
        n_tokens=np.full(200, 10),
        sequence_length=256,
        temperature=1.5,
        baseline_probabilities=proba[::-1].copy(),
        contrast=[("set", contrast_metrics([1], [1], [0], [1]))],
    )
    assert metrics["slices"]["negation"]["n"] == 20 and metrics["slices"]["borderline_rating"]["n"] == 29
    assert metrics["slices"]["mixed"]["gap_to_overall"] == pytest.approx(
        metrics["slices"]["mixed"]["accuracy"] - metrics["overall"]["accuracy"]
    )
    write_report(
        metrics,
        tmp_path,
        history={"epochs": [{"epoch": 0, "loss": 0.6, "accuracy": 0.7, "val_loss": 0.5, "val_accuracy": 0.8}]},
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["schema_version"] == 1 and saved["overall"]["accuracy"] == metrics["overall"]["accuracy"]
    md = (tmp_path / "report.md").read_text()
    assert f"{metrics['overall']['accuracy']:.1%}" in md and "| negation | 20 |" in md and "T=1.500" in md
    html_text = (tmp_path / "report.html").read_text()
    assert html_text.count("data:image/png;base64,") == 4 and "contrast" in html_text.lower()
    for png in ("confusion_matrix.png", "reliability.png", "slices.png", "learning_curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_explanations_join_pieces_into_words_and_rank_them():
    from kgemma.evaluation.explanations import edited_words
    from kgemma.evaluation.explanations import highlight_html
    from kgemma.evaluation.explanations import rank_of
    from kgemma.evaluation.explanations import top_words
    from kgemma.evaluation.explanations import words

    ig = {"tokens": ["Not", " bad", " at", " all", ",", " <b>", "ok"], "scores": [0.5, -0.2, 0.0, 0.1, 0.05, 0.3, -0.1]}
    merged, scores = words(ig)
    assert merged == ["Not", " bad", " at", " all,", " <b>ok"]
    np.testing.assert_allclose(scores, [0.5, -0.2, 0.0, 0.15, 0.2])
    pushed_for, pushed_against = top_words(ig, k=2)
    assert [w for w, _ in pushed_for] == ["Not", "<b>ok"] and pushed_against == [("bad", -0.2)]
    assert rank_of(ig, [1]) == 1 and rank_of(ig, [2, 3]) == 3 and rank_of(ig, []) is None
    page = highlight_html(ig, marked={1})
    assert page.count("<span") == 5 and "&lt;b&gt;ok" in page and "<b>" not in page
    assert "rgba(22,163,74,0.85)" in page  # the strongest word for the class, fully coloured
    assert page.count("underline") == 1 and "rgba(220,38,38,0.34)" in page  # " bad": against, 0.2 / 0.5
    assert edited_words(["A", " great", " film."], ["A", " dull", " film."]) == {1}
    assert edited_words(["It", " works."], ["It", " never", " works."]) == {1}


def test_run_evaluation_explains_mistakes_and_contrast_pairs(tmp_path):
    from kgemma.evaluation import run_evaluation

    texts = ["good fun", "bad film", "not bad", "great cast", "dull plot", "fine"]
    reviews = Reviews(texts, [1, 0, 1, 1, 0, 1])
    logits = np.array([[0, 2], [2, 0], [3, 0], [0, 1], [0, 4], [0, 1]], dtype="float32")  # rows 2 and 4 wrong
    asked = []

    def explain(batch):
        asked.append(list(batch))
        pieces = [[w if i == 0 else " " + w for i, w in enumerate(t.split(" "))] for t in batch]
        return [{"tokens": p, "scores": [1.0] * len(p), "method": "fake", "target": "positive"} for p in pieces]

    original = Reviews(["a great film", "so dull"], [1, 0])
    edited = Reviews(["a dull film", "so great"], [0, 1])

    def score(batch):  # predicts positive for "great", negative otherwise: both pairs right
        return np.array([[0.0, 1.0] if "great" in t else [1.0, 0.0] for t in batch]), np.ones(len(batch))

    metrics = run_evaluation(
        reviews,
        score,
        tmp_path,
        predictions=(logits, np.full(6, 2)),
        contrast_sets=[("pairs", (original, edited))],
        explain=explain,
        explain_count=1,
        formats=("json", "md"),
    )
    # The first pair (both are right), then the wrong reviews in one call, each once although
    # the overall list and the slices share them.
    assert asked[0] == ["a great film", "a dull film"]
    assert len(asked) == 2 and "dull plot" in asked[1] and len(set(asked[1])) == len(asked[1])
    overall = metrics["mistakes"]["overall"]
    assert overall[0]["explanation"]["words"] == ["dull", " plot"] and "explanation" not in overall[1]
    pair = metrics["contrast"][0]["explained_pairs"][0]
    assert (
        pair["index"] == 0 and pair["original"]["edited"] == [1] and pair["edited"]["words"] == ["a", " dull", " film"]
    )
    assert pair["edited"]["label"] == "negative" and pair["edited"]["predicted"] == "negative"
    assert "fake: for" in (tmp_path / "report.md").read_text()

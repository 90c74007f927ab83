"""A whole evaluation: score, fit the baseline and the temperature, compare, report.

`run_evaluation` is what `kgemma-eval` does after reading its options, so a notebook
gets the same `metrics.json` and reports with one call. It takes a scoring function,
not a model: evaluation never imports the model or training.
"""

from pathlib import Path

from kgemma.evaluation.baseline import fit_tfidf_baseline
from kgemma.evaluation.calibration import fit_temperature
from kgemma.evaluation.contrast import contrast_metrics
from kgemma.evaluation.explanations import explain_mistakes
from kgemma.evaluation.explanations import explain_pairs
from kgemma.evaluation.predictions import stream_predictions
from kgemma.evaluation.report import write_report
from kgemma.evaluation.slices import BUILTIN_SLICES
from kgemma.evaluation.suite import MISTAKES_PER_SLICE
from kgemma.evaluation.suite import evaluate_predictions

REPORT_FORMATS = ("json", "md", "html")
# Reports explain by occlusion unless asked otherwise: one forward pass per word, where
# integrated gradients need a forward and backward pass per integration step (64 to
# 1,024 per review; docs/explanations.md compares their cost and faithfulness).
EXPLAIN_METHOD = "occlusion"


def classifier_scorer(classifier, batch_size=8):
    """`texts -> (logits, untruncated token counts)` for a `GemmaSentimentClassifier`
    (anything with its `preprocessor` and `logits_for_features`)."""

    def score(texts):
        features = classifier.preprocessor(texts)
        logits = classifier.logits_for_features(features, batch_size=batch_size)
        return logits, classifier.preprocessor.token_counts(texts)

    return score


def classifier_explainer(classifier, method=EXPLAIN_METHOD, batch_size=8, **options):
    """`texts -> explanations` for `run_evaluation(explain=...)`, by `classifier.explain`
    (`options`: its `steps`, `tolerance`, `on_progress`)."""

    def explain(texts):
        return classifier.explain(texts, method=method, batch_size=batch_size, **options)

    return explain


def run_evaluation(
    reviews,
    score,
    output_dir,
    model_info=None,
    fingerprint=None,
    predictions=None,
    train=None,
    validation=None,
    temperature_scaling=False,
    slices=BUILTIN_SLICES,
    contrast_sets=(),
    formats=REPORT_FORMATS,
    history=None,
    title="kgemma evaluation",
    seed=0,
    on_progress=None,
    explain=None,
    explain_count=3,
):
    """Evaluate a classifier on `reviews` and write its report into `output_dir`.

    Args:
        reviews: the `Reviews` to evaluate (e.g. `kgemma.data.load_imdb("test", ...)`).
        score: `texts -> (logits, token_counts)`, e.g. `classifier_scorer(classifier)`.
            Only `temperature_scaling` and `contrast_sets` call it when
            `predictions` are given.
        output_dir: the report folder; its `predictions.jsonl` lets an interrupted
            evaluation resume where it stopped.
        model_info: what is evaluated, recorded in `metrics.json`; its `"settings"`
            (the classifier's `rebuild_config()`) give the sequence length and the
            model's own temperature.
        fingerprint: the model's fingerprint (`classifier.fingerprint()`): saved
            predictions are reused only for the same model.
        predictions: `(logits, token_counts)` scored elsewhere (merged shards).
        train: training rows; a TF-IDF + logistic regression baseline is trained on
            them and scored on `reviews` (None: no baseline).
        validation: validation rows, on which `temperature_scaling` fits (never on
            `reviews`).
        temperature_scaling: fit a temperature on `validation` and apply it.
        slices: `Slice` objects to report (default: the built-in nuanced slices).
        contrast_sets: `(name, (original, edited))` pairs of aligned `Reviews`.
        formats: of `"json"`, `"md"`, `"html"`.
        history: a training history (`{"epochs": [...]}`), for the learning curve.
        title: the reports' title.
        seed: seeds the bootstrap intervals and the baseline.
        on_progress: `(done, total) -> None`, called while scoring.
        explain: `texts -> explanations`, e.g. `classifier_explainer(classifier)`: the
            reports then show, for each slice and overall, the first `explain_count`
            most confident mistakes with their words coloured by attribution (HTML) or
            their top words (Markdown), and `explain_count` pairs of each contrast set
            (those the model got wrong first) with the edit marked.
        explain_count: how many mistakes per slice, and pairs per contrast set, to explain.

    Returns:
        The metrics dict written to `metrics.json`.

    Example:
    ```python
    from kgemma import GemmaSentimentClassifier
    from kgemma.data import load_imdb, stratified_sample
    from kgemma.evaluation import classifier_scorer, run_evaluation

    clf = GemmaSentimentClassifier.from_adapter("runs/E1/adapter.npz")
    test = stratified_sample(load_imdb("test", "../shared/data/imdb"), 200, seed=0)
    metrics = run_evaluation(test, classifier_scorer(clf), "runs/E1/eval-200",
                             model_info={"settings": clf.rebuild_config()}, fingerprint=clf.fingerprint())
    metrics["overall"]["accuracy"]
    ```
    """
    out = Path(output_dir)
    settings = (model_info or {}).get("settings", {})
    if predictions is None:
        predictions = stream_predictions(
            out / "predictions.jsonl", reviews, score, on_progress=on_progress, model=fingerprint
        )
    logits, n_tokens = predictions
    # The model's own temperature (saved with it), as predict_proba applies it, unless refitted here.
    temperature = settings.get("temperature", 1.0)
    if temperature_scaling:
        if validation is None:
            raise ValueError("temperature_scaling needs validation rows: pass validation=.")
        val_logits, _ = stream_predictions(out / "validation_predictions.jsonl", validation, score, model=fingerprint)
        temperature = fit_temperature(val_logits, validation.labels)
    baseline_probabilities = None
    if train is not None:
        baseline_probabilities = fit_tfidf_baseline(train.texts, train.labels, seed=seed).predict_proba(reviews.texts)
    contrast = []
    for name, (original, edited) in contrast_sets:
        original_predicted = score(original.texts)[0].argmax(axis=1)
        edited_predicted = score(edited.texts)[0].argmax(axis=1)
        values = contrast_metrics(original.labels, original_predicted, edited.labels, edited_predicted)
        if explain is not None and explain_count:
            values["explained_pairs"] = explain_pairs(
                original, edited, original_predicted, edited_predicted, explain, explain_count
            )
        contrast.append((name, values))

    metrics = evaluate_predictions(
        reviews,
        logits,
        n_tokens=n_tokens,
        sequence_length=settings.get("sequence_length"),
        slices=slices,
        temperature=None if temperature == 1.0 else temperature,
        baseline_probabilities=baseline_probabilities,
        contrast=contrast,
        mistakes_per_slice=max(MISTAKES_PER_SLICE, explain_count if explain is not None else 0),
        seed=seed,
    )
    if explain is not None and explain_count:
        explain_mistakes(metrics, reviews, explain, explain_count)
    metrics["model"] = model_info
    if "baseline" in metrics:
        metrics["baseline"]["train_rows"] = len(train)
    write_report(metrics, out, formats=formats, history=history, title=title)
    return metrics

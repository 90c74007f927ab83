"""Explanations (issue 15): integrated gradients and occlusion on tiny backbones, on every backend."""

import numpy as np
import pytest

from kgemma.data.text import clean_text
from tests.conftest import randomize_head
from tests.conftest import tiny_classifier

TEXTS = ["A wonderful, moving film with great acting.", "The plot was dull <br /> and the acting terrible."]


@pytest.fixture(scope="module")
def classifier(spm_proto):
    """One classifier for the module's tests, none of which changes it: its traced
    gradient function (a few seconds a classifier) is reused from test to test."""
    return randomize_head(tiny_classifier(spm_proto, kind="gemma3", sequence_length=64))


def test_integrated_gradients_are_complete_and_read_back_as_the_review(classifier, make_classifier):
    results = classifier.explain(TEXTS)
    probabilities = classifier.predict_proba(TEXTS)
    for text, result, p in zip(TEXTS, results, probabilities):
        assert "".join(result["tokens"]) == clean_text(text)
        assert len(result["scores"]) == len(result["tokens"]) and np.isfinite(result["scores"]).all()
        assert result["target"] == ["negative", "positive"][int(p.argmax())]
        assert result["probability"] == pytest.approx(p.max(), abs=1e-5)
        assert abs(result["logit_delta"]) > 1e-3
        assert result["completeness"] == pytest.approx(1.0, abs=0.05)  # Within 5% at the default steps.
    top_only = randomize_head(make_classifier(kind="gemma3", lora_layers=1)).explain(TEXTS[:1])[0]
    assert top_only["completeness"] == pytest.approx(1.0, abs=0.05)  # LoRA on the top block only.
    other = classifier.explain(TEXTS[0], target="negative", steps=8, tolerance=None)[0]
    assert other["steps"] == 8  # No tolerance: the steps asked for, not doubled.
    assert other["target"] == "negative" and other["probability"] == pytest.approx(probabilities[0, 0], abs=1e-5)


def test_occlusion_scores_each_word_by_the_probability_it_holds(classifier):
    calls = []
    result, _ = classifier.explain(TEXTS[:2], method="occlusion", on_progress=lambda *done: calls.append(done))
    assert calls == [(1, 2), (2, 2)]
    assert "".join(result["tokens"]) == TEXTS[0]
    assert result["tokens"][:2] == ["A", " wonderful,"]
    without_second = classifier.predict_proba(["A moving film with great acting."])
    target = ["negative", "positive"].index(result["target"])
    assert result["scores"][1] == pytest.approx(result["probability"] - without_second[0, target], abs=1e-4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "shap"}, "method must be one of"),
        ({"steps": 0}, "steps must be an integer from 1 to 1024"),
        ({"tolerance": 0}, "tolerance must be a positive number or None"),
        ({"target": "neutral"}, "target must be a class index or one of"),
    ],
)
def test_bad_requests_are_refused_by_name(classifier, kwargs, message):
    with pytest.raises(ValueError, match=message):
        classifier.explain(TEXTS, **kwargs)
    with pytest.raises(ValueError, match="Every text in the batch is empty"):
        classifier.explain(["   "])


def test_input_gradients_match_finite_differences(classifier):
    # The one backend-specific part of explain: `make test` runs this on JAX and torch too.
    from kgemma.model.explain import _target_logits
    from kgemma.model.explain import _upper_and_gradients

    upper, gradients = _upper_and_gradients(classifier)  # `_gradient_function(classifier.upper_stack(depth=0))`
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 6, classifier.backbone.hidden_dim)).astype("float32")
    mask = np.ones((2, 6), dtype="int32")
    direction = rng.normal(size=hidden.shape).astype("float32")
    analytic = float((gradients(hidden, mask, 1) * direction).sum())
    eps = 1e-2
    plus, minus = (_target_logits(upper, hidden + sign * eps * direction, mask, 1).sum() for sign in (1, -1))
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=2e-2)
    assert abs(analytic) > 1e-3

"""The real path: the embedded Gemma 3 270M (converted from its GGUF) on real IMDB reviews."""

import keras
import numpy as np
import pytest

from kgemma import GemmaSentimentClassifier
from kgemma.data import load_imdb
from kgemma.data import stratified_sample
from tests.conftest import keras_hub_outputs
from tests.conftest import randomize_head
from tests.conftest import serve_in_plain_tensorflow

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    return GemmaSentimentClassifier.from_preset(sequence_length=128)


@pytest.fixture(scope="module")
def reviews(imdb_dir):
    return stratified_sample(load_imdb("test", imdb_dir), 8, seed=0)


def next_token(backbone, tokenizer, prompt):
    ids = [tokenizer.start_token_id] + [int(i) for i in np.asarray(tokenizer(prompt))]
    hidden = backbone({"token_ids": np.array([ids]), "padding_mask": np.ones((1, len(ids)), "int32")})
    logits = backbone.token_embedding(hidden[:, -1], reverse=True)
    return int(np.argmax(np.asarray(logits)[0]))


def test_converted_backbone_is_gemma3_270m(classifier):
    assert type(classifier.backbone).__name__ == "Gemma3Backbone"
    assert classifier.backbone.count_params() == 268_098_176


def test_tokenizer_matches_the_reference_ids(classifier):
    ids = np.asarray(classifier.preprocessor.tokenizer("The capital of France is")).tolist()
    assert ids == [818, 5279, 529, 7001, 563]


@pytest.mark.parametrize(
    "prompt,token",
    [
        ("Paris is the capital of", 7001),  # " France"
        ("The Eiffel Tower is located in the city of", 9079),  # " Paris"
        ("Water is made of hydrogen and", 12123),  # " oxygen"
    ],
)
def test_converted_model_continues_facts(classifier, prompt, token):
    assert next_token(classifier.backbone, classifier.preprocessor.tokenizer, prompt) == token


def test_classifier_scores_real_reviews(classifier, reviews):
    randomize_head(classifier)
    probabilities = classifier.predict_proba(reviews.texts, batch_size=4)
    assert probabilities.shape == (8, 2)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities[:, 1].std() > 1e-3, "every review got the same score"
    alone = classifier.predict_proba(reviews.texts[:1])
    np.testing.assert_allclose(alone[0], probabilities[0], atol=1e-4)


def test_training_steps_on_real_reviews_lower_the_loss(classifier, reviews):
    clf = classifier
    clf.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.0))
    # Four reviews, three steps: the traced step is most of the time (a step through all
    # 18 blocks took 14 s for eight reviews on an AVX2 CPU).
    x = clf.preprocessor(reviews.texts[:4], reviews.labels[:4])
    losses = [float(keras.Model.train_on_batch(clf, *x)[0]) for _ in range(3)]
    assert losses[-1] < losses[0], losses


def test_adapter_round_trip_on_the_real_model(classifier, reviews, tmp_path):
    before = classifier.predict_proba(reviews.texts)
    path = classifier.save_adapter(tmp_path / "adapter.npz")
    assert path.stat().st_size < 3_000_000
    restored = GemmaSentimentClassifier.from_adapter(path)
    np.testing.assert_allclose(restored.predict_proba(reviews.texts), before, atol=1e-5)
    # A mismatched adapter's refusal is tested on tiny models (tests/test_saving.py).


def test_fused_blocks_score_real_reviews_as_keras_hub_does(classifier, reviews):
    randomize_head(classifier)
    features = {k: np.asarray(v) for k, v in classifier.preprocessor(reviews.texts).items()}
    assert classifier.scoring_model().fused
    fused = classifier.scoring_model().predict_on_batch(features)
    np.testing.assert_allclose(fused, keras_hub_outputs(classifier, features), atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="a raw-text SavedModel is written from the TensorFlow backend: make test runs this on TensorFlow",
)
def test_the_real_model_exported_serves_raw_text_in_plain_tensorflow(classifier, reviews, tmp_path):
    randomize_head(classifier)
    classifier.export(tmp_path / "served", verbose=False)
    (served,) = serve_in_plain_tensorflow(tmp_path / "served", list(reviews.texts))
    np.testing.assert_allclose(served, classifier.predict_proba(reviews.texts), atol=1e-4)


@pytest.mark.slow
def test_integrated_gradients_are_complete_on_the_real_model(classifier):
    # A short review: on a whole one at 128 tokens the steps doubled to 512 or more (425 s
    # here), too long for the suite; docs/explanations.md has those figures.
    randomize_head(classifier)
    text = "A wonderful, moving film, though the ending drags."
    (result,) = classifier.explain([text])  # Steps doubled from 64 until within 5%.
    assert result["completeness"] == pytest.approx(1.0, abs=0.05), result
    assert 64 <= result["steps"] <= 1024 and "".join(result["tokens"]) == text

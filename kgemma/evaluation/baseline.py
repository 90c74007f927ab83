"""The bag-of-words anchor: TF-IDF of unigrams and bigrams with logistic regression."""

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from kgemma.data.overlap import normalize_text


def fit_tfidf_baseline(texts, labels, seed=0):
    """A fitted scikit-learn pipeline; its `predict_proba` takes raw texts."""
    model = make_pipeline(
        TfidfVectorizer(preprocessor=normalize_text, ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )
    return model.fit(texts, labels)

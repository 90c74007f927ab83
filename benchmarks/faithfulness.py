"""How faithful are kgemma's explanations? Integrated gradients against occlusion.

    python benchmarks/faithfulness.py --adapter runs/E4/adapter.npz --output runs/faithfulness.json

On minimal pairs written for the purpose (benchmarks/data/minimal_pairs.jsonl: 60 short
reviews whose sentiment one to three edited words flip, "A great film ..." / "A dull film
..."), both sides of each pair are explained by each method, and two figures are printed:

- edit in top 3: the share of reviews whose edited words include one of the three words
  with the largest scores (either sign). An explanation that misses the edit is not
  describing what decides these reviews. A side whose edit only removed words ("not funny"
  -> "funny") has no edited word of its own and is left out of this figure.
- deletion: how much the explained class's probability falls when a review's top-k words
  (the largest scores for that class) are deleted, against k words chosen at random
  (the mean over several draws). A faithful method's top words matter more than chance.

Then the cost: seconds per review for each method on real IMDB test reviews of at least
`--long-tokens` tokens (read up to that length). The pairs are never trained or tuned on.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kgemma import GemmaSentimentClassifier  # noqa: E402
from kgemma.data import load_imdb  # noqa: E402
from kgemma.evaluation import read_contrast  # noqa: E402
from kgemma.evaluation.explanations import edited_words  # noqa: E402
from kgemma.evaluation.explanations import rank_of  # noqa: E402
from kgemma.evaluation.explanations import words  # noqa: E402
from kgemma.model.explain import METHODS  # noqa: E402

PAIRS = os.path.join(os.path.dirname(__file__), "data", "minimal_pairs.jsonl")


def edit_indices(explanations):
    """Per review (pairs interleaved: original, edited), the indices of its edited words."""
    edits = []
    for a, b in zip(explanations[::2], explanations[1::2]):
        words_a, words_b = words(a)[0], words(b)[0]
        edits += [edited_words(words_b, words_a), edited_words(words_a, words_b)]
    return edits


def deletion_drops(classifier, explanations, k, draws, rng):
    """Per review, the fall of the explained class's probability after deleting its top-k
    words, and after deleting k random words (mean over `draws`)."""
    texts = []
    for e in explanations:
        tokens, scores = words(e)
        chosen = [np.argsort(-np.asarray(scores), kind="stable")[:k]]
        chosen += [rng.choice(len(tokens), size=min(k, len(tokens)), replace=False) for _ in range(draws)]
        for deleted in map(set, chosen):
            texts.append("".join(t for j, t in enumerate(tokens) if j not in deleted).strip() or ".")
    # Each review has 1 + draws rows, in order: the top-k deletion, then the random ones.
    probabilities = classifier.predict_proba(texts).reshape(len(explanations), 1 + draws, -1)
    names = list(classifier.preprocessor.label_names)
    targets = [names.index(e["target"]) for e in explanations]
    falls = (
        np.array([e["probability"] for e in explanations])[:, None]
        - probabilities[np.arange(len(explanations)), :, targets]
    )
    return falls[:, 0], falls[:, 1:].mean(axis=1)


def long_reviews(data, tokens, n, classifier):
    """The first `n` test reviews of at least `tokens` tokens."""
    reviews = load_imdb("test", data)
    counts = classifier.preprocessor.token_counts(reviews.texts[:400])
    return [t for t, c in zip(reviews.texts, counts) if c >= tokens][:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--pairs", default=PAIRS)
    parser.add_argument("--data", default=os.environ.get("KGEMMA_IMDB_DIR"), help="IMDB folder for the cost figures.")
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--long-reviews", type=int, default=2)
    parser.add_argument("--draws", type=int, default=10, help="Random deletions per review.")
    parser.add_argument("--output", default=None, help="Write the figures as JSON here too.")
    args = parser.parse_args()

    classifier = GemmaSentimentClassifier.from_adapter(args.adapter)
    original, edited = read_contrast([args.pairs])
    texts = [t for pair in zip(original.texts, edited.texts) for t in pair]
    labels = np.array([y for pair in zip(original.labels, edited.labels) for y in pair])
    predicted = classifier.predict_proba(texts).argmax(axis=1)
    result = {
        "adapter": args.adapter,
        "pairs": args.pairs,
        "reviews": len(texts),
        "accuracy": float((predicted == labels).mean()),
        "machine": platform.processor() or platform.machine(),
        "methods": {},
    }
    print(f"{len(texts) // 2} pairs, accuracy {result['accuracy']:.1%}")
    rng = np.random.default_rng(0)
    for method in METHODS:
        saved = f"{args.output}.{method}.json" if args.output else None
        if saved and os.path.exists(saved):  # Explanations of an earlier run of the same command.
            with open(saved) as f:
                seconds, explanations = json.load(f)
        else:
            started = time.perf_counter()
            explanations = classifier.explain(texts, method=method)
            seconds = time.perf_counter() - started
            if saved:
                with open(saved, "w") as f:
                    json.dump([seconds, explanations], f)
        edits = edit_indices(explanations)
        ranks = np.array([rank_of(e, edit) for e, edit in zip(explanations, edits)], dtype=float)  # nan: no edit
        ranked = ~np.isnan(ranks)
        figures = {
            "seconds_per_review": seconds / len(texts),
            "reviews_with_an_edited_word": int(ranked.sum()),
            "edit_in_top3": float((ranks[ranked] < 3).mean()),
            "edit_top1": float((ranks[ranked] == 0).mean()),
        }
        if method == "integrated_gradients":
            completeness = np.array([e["completeness"] for e in explanations], dtype=float)
            figures["completeness_within_5pct"] = float((np.abs(completeness - 1) <= 0.05).mean())
            figures["steps_median"] = float(np.median([e["steps"] for e in explanations]))
        for k in (1, 3):
            top, random = deletion_drops(classifier, explanations, k, args.draws, rng)
            figures[f"deletion_top{k}"] = float(top.mean())
            figures[f"deletion_random{k}"] = float(random.mean())
            figures[f"deletion_top{k}_beats_random"] = float((top > random).mean())
        result["methods"][method] = figures
        print(method, json.dumps(figures))
    if args.long_reviews:
        long_model = GemmaSentimentClassifier.from_adapter(args.adapter, sequence_length=args.long_tokens)
        reviews = long_reviews(args.data, args.long_tokens, args.long_reviews, long_model)
        for method in METHODS:
            long_model.explain(reviews[:1], method=method, steps=1, tolerance=None)  # trace once, untimed
            started = time.perf_counter()
            explained = long_model.explain(reviews, method=method)
            per_review = (time.perf_counter() - started) / len(reviews)
            cost = {"tokens": args.long_tokens, "reviews": len(reviews), "seconds_per_review": per_review}
            if method == "integrated_gradients":
                cost["steps"] = [e["steps"] for e in explained]
                cost["completeness"] = [e["completeness"] for e in explained]
            result["methods"][method]["long_reviews"] = cost
            print(method, "long reviews", json.dumps(cost))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

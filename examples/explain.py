"""Show which words decided a review: its top positive and negative words.

    python examples/explain.py --adapter runs/demo/adapter.npz "Oh great, another sequel. Yeah right."
    python examples/explain.py --adapter runs/demo/adapter.npz --method occlusion "Not bad at all."

Integrated gradients by default (from 64 steps, doubled until the attributions add up to
within 5%; docs/explanations.md), or occlusion (each word left
out in turn). Scores are for the predicted class: positive ones pushed towards it.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kgemma import GemmaSentimentClassifier  # noqa: E402
from kgemma.model.explain import DEFAULT_STEPS  # noqa: E402
from kgemma.model.explain import METHODS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="+", help="Reviews to explain.")
    parser.add_argument("--adapter", required=True, help="An adapter .npz from kgemma-train or save_adapter().")
    parser.add_argument("--method", choices=METHODS, default=METHODS[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integration steps to start from.")
    parser.add_argument("--top", type=int, default=5, help="How many words to show each way.")
    args = parser.parse_args()

    classifier = GemmaSentimentClassifier.from_adapter(args.adapter)
    for result in classifier.explain(args.texts, method=args.method, steps=args.steps):
        print(f"\n{result['target']} ({result['probability']:.3f}): {result['text']}")
        if "completeness" in result:
            print(f"  completeness {result['completeness']:.3f} after {result['steps']} steps (1: exact)")
        ranked = sorted(zip(result["scores"], result["tokens"]), reverse=True)
        print("  for:    " + ", ".join(f"{t.strip()!r} {s:+.3f}" for s, t in ranked[: args.top] if s > 0))
        print("  against: " + ", ".join(f"{t.strip()!r} {s:+.3f}" for s, t in ranked[::-1][: args.top] if s < 0))


if __name__ == "__main__":
    main()

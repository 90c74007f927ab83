"""Classify texts from the command line with the embedded Gemma 3 270M.

    python examples/predict.py --adapter runs/demo/adapter.npz \\
        "A wonderful, moving film." "Two hours I will never get back."

Without --adapter the classification head is untrained and scores every review
0.5: train one first with `make demo` or `kgemma-train`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kgemma import GemmaSentimentClassifier  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="+", help="Reviews to classify.")
    parser.add_argument("--adapter", help="An adapter .npz from kgemma-train or save_adapter().")
    parser.add_argument("--preset", default=None, help="Base model (default: the embedded Gemma 3 270M).")
    args = parser.parse_args()

    if args.adapter:
        classifier = GemmaSentimentClassifier.from_adapter(args.adapter, preset=args.preset)
    else:
        print("No --adapter: the head is untrained and scores every review 0.5.", file=sys.stderr)
        classifier = GemmaSentimentClassifier.from_preset(args.preset)
    for text, result in zip(args.texts, classifier.classify(args.texts)):
        print(f"{result['label']:>8}  {result['score']:.3f}  {text}")


if __name__ == "__main__":
    main()

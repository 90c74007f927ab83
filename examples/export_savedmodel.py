"""Export a trained adapter as a TensorFlow SavedModel that serves raw text.

    python examples/export_savedmodel.py --adapter runs/demo/adapter.npz --output served/sentiment/1

The SavedModel's `serve` endpoint takes a batch of strings and returns class
probabilities (tokenizer, clean-up and truncation inside). The script then loads it
back the way a server would, with TensorFlow and TensorFlow Text, and checks it
against `predict_proba` on a few texts. docs/deploy.md shows how to serve it.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401  (the SentencePiece op the SavedModel uses)

from kgemma import GemmaSentimentClassifier  # noqa: E402

CHECK_TEXTS = [
    "A wonderful, moving film with a clever script.",
    "Two hours I will never get back.",
    "Oh great, another sequel nobody asked for. Yeah right.",
    "I loved the music but the ending was weak.",
]


def folder_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="An adapter .npz from kgemma-train or save_adapter().")
    parser.add_argument("--preset", default=None, help="Base model (default: the one the adapter records).")
    parser.add_argument("--output", required=True, help="The SavedModel folder (for TF Serving: NAME/VERSION).")
    args = parser.parse_args()

    classifier = GemmaSentimentClassifier.from_adapter(args.adapter, preset=args.preset)
    started = time.perf_counter()
    classifier.export(args.output, verbose=False)
    print(
        f"Exported to {args.output} in {time.perf_counter() - started:.0f} s: {folder_size(args.output) / 1e6:.0f} MB"
    )

    served = tf.saved_model.load(args.output)
    got = served.serve(tf.constant(CHECK_TEXTS)).numpy()
    expected = classifier.predict_proba(CHECK_TEXTS)
    print(
        f"serve() against predict_proba on {len(CHECK_TEXTS)} texts: max difference {np.abs(got - expected).max():.2e}"
    )


if __name__ == "__main__":
    main()

"""Scoring speed on real IMDB lengths for several batch-width steps (the padding lever).

    python benchmarks/widths.py --data ../shared/data/imdb --steps 64,32,16,8 --passes 3

Scores the same seeded, stratified test reviews in length-sorted batches whose width is
rounded up to each step, and prints the mean padded width and reviews/s of each timed pass
(every step's shapes are traced once, untimed, first). It asserts nothing.
"""

import os
import time

import click
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="IMDB folder (test.jsonl.gz).")
@click.option("--sample", default=64, show_default=True)
@click.option("--max-length", default=512, show_default=True)
@click.option("--dtype", default="bfloat16", show_default=True)
@click.option("--steps", default="64,32,16,8", show_default=True)
@click.option("--passes", default=3, show_default=True, help="Timed passes per step, interleaved across steps.")
def main(data, sample, max_length, dtype, steps, passes):
    from kgemma import GemmaSentimentClassifier
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample
    from kgemma.model.batching import length_sorted_batches
    from kgemma.model.preprocessor import tokenize

    clf = GemmaSentimentClassifier.from_preset(dtype=dtype, sequence_length=max_length)
    reviews = stratified_sample(load_imdb("test", data), sample, seed=0)
    features = tokenize(clf.preprocessor, reviews.texts)
    lengths = features["padding_mask"].sum(axis=1)
    model = clf.scoring_model()

    def score(step):
        widths = []
        for rows, width in length_sorted_batches(lengths, 8, limit=max_length, step=step):
            widths.append(width)
            model.predict_on_batch({k: v[rows, :width] for k, v in features.items()})
        return float(np.mean(widths))

    step_list = [int(s) for s in steps.split(",")]
    for step in step_list:
        score(step)  # Trace each width once.
    for _ in range(passes):
        for step in step_list:
            started = time.perf_counter()
            width = score(step)
            print(
                f"step {step:>3}: mean padded width {width:.1f}, {sample / (time.perf_counter() - started):.2f} "
                "reviews/s",
                flush=True,
            )


if __name__ == "__main__":
    main()

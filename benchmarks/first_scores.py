"""The first `predict_proba` calls on the embedded model: what tracing costs scoring.

    python benchmarks/first_scores.py --data ../shared/data/imdb

Scores real IMDB test reviews the way a notebook does: one review, then three, then
five (each fewer than a batch, so each call is one batch of that many rows), then
`--sample` reviews twice (full batches of 8 and a short last one). Prints each call's
seconds and how many times TensorFlow has traced the scoring step so far. It asserts
nothing.
"""

import os
import time

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="IMDB folder (test.jsonl.gz).")
@click.option("--sequence-length", default=256, show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--sample", default=64, show_default=True, help="Reviews in the last two calls.")
def main(data, sequence_length, dtype, sample):
    import keras

    from kgemma import GemmaSentimentClassifier
    from kgemma.data import load_imdb
    from kgemma.data import stratified_sample

    clf = GemmaSentimentClassifier.from_preset(dtype=dtype, sequence_length=sequence_length)
    texts = stratified_sample(load_imdb("test", data), sample, seed=0).texts
    print(f"{keras.backend.backend()}, {clf.backbone.dtype_policy.name}, {sequence_length} tokens", flush=True)
    calls = [("1 review", texts[:1]), ("3 reviews", texts[1:4]), ("5 reviews", texts[4:9])]
    for name, batch in calls + [(f"{sample} reviews", texts), (f"{sample} reviews again", texts)]:
        started = time.perf_counter()
        clf.predict_proba(batch, batch_size=8)
        seconds = time.perf_counter() - started
        function = getattr(clf.scoring_model().predict_function, "function", None)
        traces = function.experimental_get_tracing_count() if function is not None else "-"
        print(f"{name}: {seconds:.1f} s, scoring step traced {traces} time(s) so far", flush=True)


if __name__ == "__main__":
    main()

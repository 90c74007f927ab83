"""A whole training run: data, model, fit, and the files a user keeps."""

import dataclasses
import json
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from kgemma.data import drop_overlap
from kgemma.data import is_single_file
from kgemma.data import load_imdb
from kgemma.data import overlap_report
from kgemma.data import read_reviews
from kgemma.data import stratified_sample
from kgemma.data import train_validation_split
from kgemma.files import read_json
from kgemma.files import save_text_atomically
from kgemma.model import GemmaSentimentClassifier
from kgemma.model.dtypes import resolve_dtype
from kgemma.model.int8 import resolve_frozen_int8
from kgemma.scaling.distribution import SingleDevice
from kgemma.training.trainer import fit
from kgemma.training.trainer import read_progress

RUN_FILE = "run.json"


def load_training_data(source, config, data_dir=None, eval_source=None, **fields):
    """Training and validation `Reviews` and a data report.

    For an IMDB source (tfds or a folder) the test split is read only to report,
    and optionally drop, training rows whose text also occurs in it; it is never
    trained or tuned on.
    """
    is_file = is_single_file(source)
    reviews = load_imdb("train", source, data_dir, **fields)
    report = {"source": reviews.source, "rows": len(reviews)}
    evaluation = None
    if eval_source is not None:
        evaluation = read_reviews(eval_source, **fields)
    elif not is_file:
        evaluation = load_imdb("test", source, data_dir, **fields)
    if evaluation is not None:
        report["overlap_with_evaluation"] = overlap_report(reviews, evaluation)
        if config.drop_overlap:
            reviews = drop_overlap(reviews, evaluation)
            report["rows_after_dropping_overlap"] = len(reviews)
    if config.max_examples:
        reviews = stratified_sample(reviews, config.max_examples, seed=config.seed)
    if len(np.unique(reviews.labels)) < 2:
        warnings.warn(
            f"Every training review has the same label ({reviews.labels[0]}): the classifier can learn nothing "
            "but that label.",
            stacklevel=2,
        )
    train, validation = train_validation_split(reviews, config.validation_fraction, seed=config.seed)
    report.update(train=len(train), validation=len(validation), train_labels=train.label_counts())
    return train, validation, report


def _check_run_dir(run_dir, run_settings, resume, is_chief=True):
    """Refuse to overwrite a run, or to resume one with different settings.

    Returns whether there is a checkpoint to resume from: a run killed before its
    first checkpoint is started again from the beginning by `resume`. Of several
    workers, the chief alone refuses to overwrite: the others may look after it has
    written the new run's settings.
    """
    saved = run_dir / RUN_FILE
    if not resume and not is_chief:
        return False
    if not resume:
        if saved.is_file():
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it (or to start it again if it "
                "stopped before its first checkpoint), or choose another output folder."
            )
        return False
    if not saved.is_file():
        raise FileNotFoundError(f"Nothing to resume in {run_dir}: no {RUN_FILE} there.")
    changed = _changed_settings(read_json(saved), run_settings)
    if changed:
        raise ValueError(
            f"{run_dir} was started with other settings ({'; '.join(changed)}); resume it with the same ones."
        )
    return read_progress(run_dir) is not None


def _changed_settings(previous, current):
    """`"name: was -> now"` for each setting that differs, config fields by name."""
    changed = []
    for key in sorted(set(previous) | set(current)):
        before, now = previous.get(key), current.get(key)
        if key == "config" and isinstance(before, dict) and isinstance(now, dict):
            changed += [
                f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                for k in sorted(set(before) | set(now))
                if before.get(k) != now.get(k)
            ]
        elif before != now:
            changed.append(f"{key}: {before!r} -> {now!r}")
    return changed


def run_training(
    config,
    output_dir,
    preset=None,
    data_source=None,
    data_dir=None,
    resume=False,
    save_keras=True,
    verbose=1,
    distribution=None,
    prefix_cache=None,
    callbacks=None,
    **fields,
):
    """Fine-tune on IMDB (or a labelled file) and write the run's outputs.

    `distribution` is an optional plan from `kgemma.scaling.create_distribution`:
    the model is built in its scope and each step's batch split across replicas.
    `prefix_cache`: a folder that keeps the cached frozen prefix's states for
    later runs over the same reviews (see `kgemma.training.fit`). `callbacks`:
    `keras.callbacks.Callback`s for the training loop (`kgemma.training.fit` says
    what they are told), such as `kgemma.training.TensorBoard`.

    Outputs in `output_dir`: `adapter.npz`, `model.keras` (if `save_keras`),
    `history.json`/`history_steps.csv`/`history_epochs.csv`, `learning_curve.png`,
    `summary.json`, `run.json` (settings), `checkpoint.npz` (resumable state).
    """
    started = time.perf_counter()
    # The run records the dtype and int8 choice it used, not "auto" or None, which mean
    # another on another CPU or backend.
    int8_setting = config.frozen_int8
    config = dataclasses.replace(
        config, dtype=resolve_dtype(config.dtype), frozen_int8=resolve_frozen_int8(config.frozen_int8)
    )
    run_dir = Path(output_dir)
    if data_source not in (None, "tfds"):
        # Absolute, so that kgemma-eval finds the same rows from any working directory.
        data_source = str(Path(data_source).expanduser().resolve())
    run_settings = {
        "config": config.to_dict(),
        "preset": None if preset is None else str(preset),
        "data_source": None if data_source is None else str(data_source),
        "fields": fields,
    }
    plan = distribution or SingleDevice()
    has_checkpoint = _check_run_dir(run_dir, run_settings, resume, plan.is_chief)
    if resume and not has_checkpoint:  # Shown even when quiet: it is not progress, it is news.
        print(f"{run_dir} stopped before its first checkpoint: starting it again from the beginning.")
    train, validation, data_report = load_training_data(data_source, config, data_dir, **fields)
    # Seed before building: it fixes the LoRA and head initialization.
    keras.utils.set_random_seed(config.seed)
    with plan.scope():
        options = {**config.classifier_options(), "frozen_int8": int8_setting}
        classifier = GemmaSentimentClassifier.from_preset(preset, dtype=config.dtype, **options)
    if classifier.frozen_int8 != config.frozen_int8:  # Left to the machine, on blocks int8 cannot run: float.
        config = dataclasses.replace(config, frozen_int8=classifier.frozen_int8)
        run_settings["config"] = config.to_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    if plan.is_chief:
        save_text_atomically(run_dir / RUN_FILE, json.dumps(run_settings, indent=2))
    history, progress = fit(
        classifier,
        train,
        validation,
        config,
        run_dir,
        resume=has_checkpoint,
        verbose=verbose,
        distribution=plan,
        prefix_cache=prefix_cache,
        callbacks=callbacks,
    )
    summary = _summary(classifier, config, data_report, history, progress, time.perf_counter() - started)
    summary["distribution"] = plan.describe()
    if plan.is_chief:  # Every worker ends with the same weights; one writes them.
        _save_outputs(run_dir, classifier, history, summary, save_keras)
    return classifier, summary


def _save_outputs(run_dir, classifier, history, summary, save_keras):
    classifier.save_adapter(run_dir / "adapter.npz")
    if save_keras:
        classifier.save(run_dir / "model.keras")
    history.plot(run_dir / "learning_curve.png")
    save_text_atomically(run_dir / "summary.json", json.dumps(summary, indent=2))


def _summary(classifier, config, data_report, history, progress, wall_seconds):
    reviews_trained = sum(s["reviews"] for s in history.steps)
    train_seconds = progress["train_seconds"]
    best = next((e for e in history.epochs if e["epoch"] == progress["best_epoch"]), None)
    price = config.price_per_hour
    return {
        "data": data_report,
        "steps": len(history.steps),
        "epochs_run": len(history.epochs),
        "reviews_trained": reviews_trained,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds_this_session": round(wall_seconds, 1),
        "train_reviews_per_s": round(reviews_trained / train_seconds, 3) if train_seconds else None,
        "trainable_params": int(sum(np.prod(w.shape) for w in classifier.trainable_weights)),
        "total_params": int(classifier.count_params()),
        "best_epoch": None if progress["best_epoch"] is None else progress["best_epoch"] + 1,
        "best_validation": best and {"loss": best["val_loss"], "accuracy": best["val_accuracy"]},
        "price_per_hour": price,
        # Training steps only, summed over resumed sessions: the figure the fine-tuning report quoted.
        "estimated_training_cost": round(price * train_seconds / 3600, 4) if price else None,
    }

"""The training loop: Keras's compiled train step over length-bucketed batches,
with step-exact resumable checkpoints, validation each epoch and early stopping."""

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
from scipy.special import log_softmax

from kgemma.model.batching import batch_outputs
from kgemma.model.batching import epoch_batches
from kgemma.model.batching import predict_rows
from kgemma.model.preprocessor import tokenize
from kgemma.scaling.distribution import SingleDevice
from kgemma.training.checkpoint import load_state
from kgemma.training.checkpoint import save_state
from kgemma.training.history import History
from kgemma.training.loss import training_loss
from kgemma.training.prefix_cache import PrefixStates
from kgemma.training.prefix_cache import cache_key
from kgemma.training.prefix_cache import cached_prefix_states

CHECKPOINT = "checkpoint.npz"
# What each step tells `fit`'s callbacks (the history records these and more).
BATCH_LOGS = ("loss", "accuracy", "learning_rate", "reviews_per_s")


def make_optimizer(config, total_steps):
    """AdamW with an optional linear warmup, then constant or cosine-decayed."""
    lr = config.learning_rate
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if config.schedule == "cosine" or warmup:
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(total_steps - warmup, 1),
            alpha=0.0 if config.schedule == "cosine" else 1.0,  # alpha 1: no decay.
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    accumulation = config.gradient_accumulation_steps
    return keras.optimizers.AdamW(
        learning_rate=lr,
        weight_decay=config.weight_decay,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
    )


def model_inputs(features, rows, width, states=None):
    """A batch for the model: token ids, or the frozen prefix's cached states."""
    mask = features["padding_mask"][rows, :width]
    if states is None:
        return {"token_ids": features["token_ids"][rows, :width], "padding_mask": mask}
    hidden = np.zeros((len(rows), width, states[0].shape[-1]), dtype=states[0].dtype)
    for j, i in enumerate(rows):
        hidden[j, : len(states[i])] = states[i][:width]
    return {"hidden_states": hidden, "padding_mask": mask}


def predict_logits(model, features, batch_size, states=None, distribution=None):
    """`model`'s outputs for every row, in length-sorted batches trimmed of padding."""
    plan = distribution or SingleDevice()
    return predict_rows(
        # keras.Model's own predict step (the batch is already preprocessed), split across replicas.
        lambda batch: plan.predict_on_batch(model, batch),
        features["padding_mask"].sum(axis=1),
        batch_size,
        limit=features["token_ids"].shape[1],
        batch_inputs=lambda rows, width: model_inputs(features, rows, width, states),
    )


def keras_jit_compile(setting):
    """A config's `jit_compile` as Keras takes it: `None` means Keras's own choice."""
    return "auto" if setting is None else setting


def prefix_states(
    classifier, features, batch_size, jit_compile=None, distribution=None, verbose=0, depth=None, cache_dir=None
):
    """The frozen prefix's output for every row as `PrefixStates`, each row trimmed
    to its own length (`depth`: where the prefix ends, by default the first
    adapted block). With `cache_dir`, the states are mapped from a matching entry
    there, or computed once into a new one (`kgemma.training.prefix_cache`).

    Padding is on the right, and no later layer reads padding positions, so a
    review's states can be padded with zeros to any batch width.
    """
    plan = distribution or SingleDevice()
    with plan.scope():
        prefix = classifier.frozen_prefix(depth)
        prefix.compile(jit_compile=keras_jit_compile(jit_compile))
    lengths = features["padding_mask"].sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden, dtype = classifier.backbone.hidden_dim, numpy_dtype(classifier.backbone.compute_dtype)

    def fill(flat):
        bar = keras.utils.Progbar(len(lengths), verbose=verbose, unit_name="review")
        batches = batch_outputs(
            lambda batch: plan.predict_on_batch(prefix, batch),
            lengths,
            batch_size,
            limit=features["token_ids"].shape[1],
            batch_inputs=lambda rows, width: model_inputs(features, rows, width),
        )
        for rows, out in batches:
            for j, i in enumerate(rows):
                flat[offsets[i] : offsets[i + 1]] = out[j, : lengths[i]]
            bar.add(len(set(rows.tolist())))

    if cache_dir is not None:
        key = cache_key(classifier, features, prefix.depth, prefix.fused, prefix.int8)
        settings = {
            "base_preset": classifier.base_preset,
            "dtype": str(dtype),
            "depth": prefix.depth,
            "int8": prefix.int8,
            "reviews": len(lengths),
        }
        return cached_prefix_states(cache_dir, key, settings, lengths, hidden, dtype, fill)
    flat = np.empty((int(offsets[-1]), hidden), dtype=dtype)
    started = time.perf_counter()
    fill(flat)
    return PrefixStates(flat, lengths, time.perf_counter() - started)


def numpy_dtype(name):
    """A Keras dtype name as a numpy dtype (bfloat16 through ml_dtypes, as Keras does)."""
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name, name))


def training_model(classifier, config, total_steps, distribution=None, depth=None):
    """The model `fit` trains, compiled with the run's optimizer: with a cached frozen
    prefix the classifier's `UpperStack` from block `depth`; without, the classifier
    itself (what Keras's `clf.fit` trains), or with `frozen_int8` its `forward_model`
    (the classifier's `call` stays float). All share the classifier's weights and run
    Gemma 3 blocks fused (`kgemma.model.fused_blocks`), with the classifier's
    `frozen_int8`."""
    use_cache = config.cache_prefix and config.lora_layers is not None and classifier.frozen_depth > 0
    with (distribution or SingleDevice()).scope():
        classifier.compile(
            optimizer=make_optimizer(config, total_steps),
            loss=training_loss(classifier, config.label_smoothing),
            jit_compile=keras_jit_compile(config.jit_compile),
        )
        if use_cache:
            model = classifier.upper_stack(depth, int8=None)
        elif classifier.frozen_int8:
            model = classifier.forward_model()
        else:
            return _check_adapters_train(classifier, classifier), False
        compile_for_training(model, classifier, config)
    return _check_adapters_train(model, classifier), use_cache


def _check_adapters_train(model, classifier):
    """Refuse a model whose trainable weights leave out a LoRA weight: it would
    train the head alone and say nothing (as kgemma did on Keras's torch backend
    before its adapters were tracked after the functional model's init)."""
    trainable = {id(w) for w in model.trainable_weights}
    missing = [w.path for adapter in classifier.lora_adapters for w in adapter.weights if id(w) not in trainable]
    if missing:
        raise RuntimeError(
            f"{len(missing)} LoRA weights (first: {missing[0]}) are not among the model's trainable weights on "
            f"Keras's {keras.backend.backend()} backend, so training would move the head alone."
        )
    return model


def compile_for_training(model, classifier, config):
    """Compile `model`, another model over the classifier's weights (its `UpperStack`, or
    a variant a benchmark trains), as `training_model` compiles it: the classifier's
    optimizer (one optimizer state), the run's loss and jit setting."""
    model.compile(
        optimizer=classifier.optimizer,
        loss=training_loss(classifier, config.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        jit_compile=keras_jit_compile(config.jit_compile),
    )


def loss_and_accuracy(logits, labels):
    """Mean cross-entropy and accuracy of logits against integer labels."""
    log_probs = log_softmax(logits, axis=1)
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    return float(loss), float((logits.argmax(axis=1) == labels).mean())


def _fresh_progress():
    return {
        "epoch": 0,
        "step": 0,
        "global_step": 0,
        "train_seconds": 0.0,
        "best_val_loss": None,
        "best_epoch": None,
        "epochs_without_improvement": 0,
        "finished": False,
    }


def fit(
    classifier,
    train,
    validation,
    config,
    run_dir,
    resume=False,
    verbose=1,
    distribution=None,
    prefix_cache=None,
    callbacks=None,
):
    """Fine-tune `classifier` on `train` (`Reviews`), validating on `validation`.

    With a `distribution` plan (`kgemma.scaling.create_distribution`; the classifier
    built in its scope), each step's batch is split across its replicas; the last
    batch of an epoch drops the rows that do not split evenly. With several workers
    (`--multi-worker`), every worker runs `fit` on the same data and only the chief
    writes; `run_dir` must be the same storage for all of them, for `resume`.

    Writes `checkpoint.npz` every `config.checkpoint_every` steps and at each epoch
    end, and `history.*` alongside; with `resume=True` it continues from the last
    checkpoint at the exact step. At the end the best epoch's weights (lowest
    validation loss) are restored.

    With `prefix_cache` (a folder) and a cached frozen prefix, the prefix's states
    are kept there, memory-mapped, and reused by later runs over the same reviews
    (`kgemma.training.prefix_cache`). The training time still counts the prefix
    pass, as long as it took when the entry was made.

    `callbacks`: `keras.callbacks.Callback`s, called as Keras's `fit` calls them, on
    the model that trains (the classifier, or its upper stack with a cached prefix, a view
    that shares the classifier's weights).
    Batch logs hold `loss`, `accuracy` (the step's), `learning_rate` and
    `reviews_per_s`; epoch logs the epoch's `loss`, `accuracy`, `val_loss` and
    `val_accuracy`. `on_train_begin` gets `global_step` (more than 0 when resuming).
    A callback that sets `model.stop_training` ends the run after that epoch's
    validation, as in Keras's `fit`.

    Returns:
        `(history, progress)`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = distribution or SingleDevice()
    if prefix_cache is not None and plan.workers > 1:
        raise ValueError(
            "A prefix cache folder cannot be shared by several workers: one could map an entry while another "
            "computes it, and their steps would no longer match. Leave out --prefix-cache with --multi-worker."
        )
    features = tokenize(classifier.preprocessor, train.texts)
    val_features = tokenize(classifier.preprocessor, validation.texts)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    if config.batch_size % plan.replicas:
        raise ValueError(
            f"batch_size {config.batch_size} does not split across {plan.replicas} data-parallel replicas."
        )
    model, cached = training_model(classifier, config, steps_per_epoch * config.epochs, plan)
    states = val_states = None
    if cached:
        states, val_states, prefix_seconds = _prefix_pass(
            classifier, features, val_features, config, plan, verbose, prefix_cache
        )

    progress, best_weights, history = _fresh_progress(), None, History()
    if resume:
        with plan.scope():  # The optimizer's state, if built here, mirrored like its weights.
            progress, best_weights = load_state(run_dir / CHECKPOINT, model)
        history = History.load(run_dir, up_to_step=progress["global_step"], epochs_done=progress["epoch"])
        if verbose:
            print(f"Resuming at epoch {progress['epoch'] + 1}, step {progress['step']} of {steps_per_epoch}.")

    if cached:
        # Training time includes the prefix pass, so reviews/s stay comparable.
        progress["train_seconds"] += prefix_seconds
    callbacks = keras.callbacks.CallbackList(callbacks, model=model, epochs=config.epochs, steps=steps_per_epoch)
    model.stop_training = False
    callbacks.on_train_begin({"global_step": progress["global_step"]})

    def checkpoint():
        if not plan.is_chief:  # Every worker holds the same state; one writes it.
            return
        # History first: a run killed between the two writes resumes from the older
        # checkpoint and drops the newer history steps (`up_to_step`); the other order
        # would resume past a step the history never recorded.
        history.save(run_dir)
        save_state(run_dir / CHECKPOINT, model, progress, best_weights)

    while not progress["finished"] and progress["epoch"] < config.epochs:
        epoch_start = time.perf_counter()
        callbacks.on_epoch_begin(progress["epoch"])
        _train_epoch(model, plan, train, features, states, config, progress, history, checkpoint, verbose, callbacks)
        val_logits = predict_logits(model, val_features, config.batch_size, val_states, plan)
        best_weights = _end_epoch(
            model, validation, val_logits, config, progress, history, best_weights, epoch_start, verbose
        )
        epoch_logs = {k: history.epochs[-1][k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        callbacks.on_epoch_end(history.epochs[-1]["epoch"], epoch_logs)
        if model.stop_training:
            progress["finished"] = True
        checkpoint()

    if best_weights is not None:
        for variable, value in zip(model.trainable_weights, best_weights):
            variable.assign(value)
    progress["finished"] = True
    checkpoint()
    callbacks.on_train_end({"global_step": progress["global_step"]})
    return history, progress


def _prefix_pass(classifier, features, val_features, config, plan, verbose, prefix_cache):
    """The frozen prefix's states for the training and validation rows, and the
    seconds their pass took (for a cache entry, when the entry was made)."""
    if verbose:
        print(f"Computing the frozen prefix ({classifier.frozen_depth} blocks) once per review:")
    states, val_states = (
        prefix_states(classifier, f, config.batch_size, config.jit_compile, plan, verbose, cache_dir=prefix_cache)
        for f in (features, val_features)
    )
    seconds = states.seconds + val_states.seconds
    if verbose:
        print(
            f"Cached the frozen prefix ({classifier.frozen_depth} blocks) of {len(states) + len(val_states)} "
            f"reviews in {seconds:.0f} s."
        )
    return states, val_states, seconds


def _train_epoch(model, plan, train, features, states, config, progress, history, checkpoint, verbose, callbacks):
    """The steps of epoch `progress["epoch"]` from `progress["step"]` on (all of
    them, unless resuming, or until a callback stops training), each recorded in
    `history` and passed to `callbacks`, checkpointed every `config.checkpoint_every`
    steps."""
    epoch = progress["epoch"]
    lengths = features["padding_mask"].sum(axis=1)
    limit = features["token_ids"].shape[1]
    batches = epoch_batches(lengths, config.batch_size, epoch, config.seed, limit, multiple=plan.replicas)
    bar = keras.utils.Progbar(len(batches), verbose=verbose, stateful_metrics=["loss", "accuracy", "reviews/s"])
    bar.update(progress["step"])
    done = history.epoch_steps(epoch)  # Steps of this epoch before a resume.
    loss_sum, accuracy_sum = sum(s["loss"] for s in done), sum(s["accuracy"] for s in done)
    for step in range(progress["step"], len(batches)):
        rows, width = batches[step]
        x = model_inputs(features, rows, width, states)
        callbacks.on_train_batch_begin(step)
        started = time.perf_counter()
        # keras.Model's own train step (the batch is already preprocessed), split across replicas.
        logs = plan.train_on_batch(model, x, train.labels[rows])
        seconds = time.perf_counter() - started
        progress["train_seconds"] += seconds
        progress["step"], progress["global_step"] = step + 1, progress["global_step"] + 1
        record = {
            "global_step": progress["global_step"],
            "epoch": epoch,
            "step": step + 1,
            "reviews": len(rows),
            "loss": float(logs["loss"]),
            "accuracy": float(logs["sparse_categorical_accuracy"]),
            "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
            "reviews_per_s": len(rows) / seconds,
        }
        history.steps.append(record)
        loss_sum, accuracy_sum = loss_sum + record["loss"], accuracy_sum + record["accuracy"]
        bar.update(
            step + 1,
            [
                ("loss", loss_sum / (step + 1)),
                ("accuracy", accuracy_sum / (step + 1)),
                ("reviews/s", record["reviews_per_s"]),
            ],
        )
        callbacks.on_train_batch_end(step, {k: record[k] for k in BATCH_LOGS})
        if progress["global_step"] % config.checkpoint_every == 0:
            checkpoint()
        if model.stop_training:
            break


def _end_epoch(model, validation, val_logits, config, progress, history, best_weights, started, verbose):
    """Record the epoch's validation, apply early stopping; return the best weights so far."""
    epoch = progress["epoch"]
    val_loss, val_accuracy = loss_and_accuracy(val_logits, validation.labels)
    done = history.epoch_steps(epoch)
    history.epochs.append(
        {
            "epoch": epoch,
            "loss": float(np.mean([s["loss"] for s in done])),
            "accuracy": float(np.mean([s["accuracy"] for s in done])),
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": time.perf_counter() - started,
        }
    )
    if progress["best_val_loss"] is None or val_loss < progress["best_val_loss"]:
        progress.update(best_val_loss=val_loss, best_epoch=epoch, epochs_without_improvement=0)
        best_weights = [np.array(w.numpy()) for w in model.trainable_weights]
    else:
        progress["epochs_without_improvement"] += 1
    if verbose:
        print(f"epoch {epoch + 1}: val_loss {val_loss:.4f}, val_accuracy {val_accuracy:.4f}")
    progress["epoch"], progress["step"] = epoch + 1, 0
    if progress["epochs_without_improvement"] >= config.early_stopping_patience:
        if verbose:
            print(f"Early stopping: no better validation loss for {config.early_stopping_patience} epochs.")
        progress["finished"] = True
    return best_weights


def read_progress(run_dir):
    """The progress dict of a run's last checkpoint, or None."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return json.loads(data["__progress__"].tobytes().decode())

"""Data and model parallelism on the engines Keras already has.

On the JAX backend, `keras.distribution`: `DataParallel`, and `ModelParallel` over a
`DeviceMesh` with a layout map of the Gemma weights; on several hosts, `DataParallel`
over every process's devices after `keras.distribution.initialize()`. On the
TensorFlow backend, `tf.distribute`: `MirroredStrategy` on one host,
`MultiWorkerMirroredStrategy` (configured by `TF_CONFIG`) on several. Each plan has a
`scope()` to build the model in, a `train_on_batch` that splits a global batch across
replicas, and says which worker this process is and whether it is the chief.
"""

import contextlib

import keras

STRATEGIES = ("none", "data", "model")


class SingleDevice:
    """No distribution: Keras's own steps on the default device."""

    replicas = 1
    # This process's place among the workers: several only with `--multi-worker`.
    worker, workers, is_chief = 0, 1, True

    def scope(self):
        return contextlib.nullcontext()

    def _function(self, model, kind, build):
        """`build()` (a compiled step for `model`), built once per model and kind."""
        functions = self.__dict__.setdefault("_functions", {})
        key = (id(model), kind)
        if key not in functions:
            functions[key] = (model, build())  # The model kept alive, so its id stays its own.
        return functions[key][1]

    def train_on_batch(self, model, x, y):
        return keras.Model.train_on_batch(model, x, y, return_dict=True)

    def predict_on_batch(self, model, x):
        return keras.ops.convert_to_numpy(keras.Model.predict_on_batch(model, x))

    def describe(self):
        return {"strategy": "none", "backend": keras.backend.backend(), "replicas": 1}


class KerasDistribution(SingleDevice):
    """A `keras.distribution` plan (JAX): Keras shards every batch itself. With several
    processes (`keras.distribution.initialize()`), each gives Keras its own rows."""

    def __init__(self, distribution, strategy, replicas, mesh_shape):
        import jax

        self.distribution = distribution
        self.strategy = strategy
        self.replicas = replicas
        self.mesh_shape = mesh_shape
        self.worker, self.workers = jax.process_index(), jax.process_count()
        self.is_chief = self.worker == 0

    def scope(self):
        return self.distribution.scope()

    def _local(self, arrays, rows):
        """This process's share of a batch of `rows` rows: Keras's JAX trainer takes
        each process's rows and assembles the global batch from them."""
        share = rows // self.workers
        start = self.worker * share
        return keras.tree.map_structure(lambda a: a[start : start + share], arrays)

    def train_on_batch(self, model, x, y):
        if self.workers > 1:
            x, y = self._local((x, y), len(y))
        # Keras's JAX trainer reads the distribution in force, not the one a model was built in.
        with self.distribution.scope(), _worker_losses(self.workers):
            logs = keras.Model.train_on_batch(model, x, y, return_dict=True)
            return {k: float(v) for k, v in logs.items()}  # Here, where a lost worker shows.

    def predict_on_batch(self, model, x):
        if self.workers > 1:
            with _worker_losses(self.workers):
                return self._gathered_predict(model, x)
        with self.distribution.scope():
            return keras.ops.convert_to_numpy(keras.Model.predict_on_batch(model, x))

    def _gathered_predict(self, model, x):
        """The whole batch's outputs on every process. Keras's predict_on_batch would
        leave each process holding only its own rows' outputs, which numpy cannot read;
        this forward asks XLA for them replicated."""
        import jax
        import numpy as np

        x, n = _pad_rows(x, self.replicas)
        local = self._local(x, len(next(iter(x.values()))))
        shardings = {k: self.distribution.get_data_layout(v.shape).backend_layout for k, v in x.items()}
        batch = {k: jax.make_array_from_process_local_data(shardings[k], v, x[k].shape) for k, v in local.items()}

        def build():
            mesh = next(iter(shardings.values())).mesh
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

            def forward(trainable, non_trainable, batch):
                outputs, _ = model.stateless_call(trainable, non_trainable, batch, training=False)
                return outputs.astype("float32")

            return jax.jit(forward, out_shardings=replicated)

        forward = self._function(model, "predict", build)
        values = [[v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]]
        return np.asarray(forward(*values, batch))[:n]

    def describe(self):
        described = {
            "strategy": self.strategy,
            "backend": "jax",
            "replicas": self.replicas,
            "mesh_shape": list(self.mesh_shape),
        }
        if self.workers > 1:
            described.update(workers=self.workers, worker=self.worker)
        return described


class TensorFlowStrategy(SingleDevice):
    """A `tf.distribute` strategy; each step's batch is split across its replicas,
    and across its workers when there are several (`MultiWorkerMirroredStrategy`)."""

    def __init__(self, strategy, name):
        self.strategy = strategy
        self.name = name
        self.replicas = strategy.num_replicas_in_sync
        self.worker, self.workers, self.is_chief = _worker_of(strategy.cluster_resolver)

    def scope(self):
        return self.strategy.scope()

    def _distribute(self, arrays, rows):
        """`arrays` (a tuple or dict of `rows` rows) as one distributed batch: replica
        r (counted over all workers) gets rows `r*k .. (r+1)*k - 1`, k = rows / replicas.
        Each worker builds only its own replicas' rows."""
        import tensorflow as tf

        per_replica = rows // self.replicas

        def dataset(context):
            share = rows // context.num_input_pipelines
            start = context.input_pipeline_id * share
            mine = tf.nest.map_structure(lambda a: a[start : start + share], arrays)
            return tf.data.Dataset.from_tensor_slices(mine).batch(per_replica)

        return next(iter(self.strategy.distribute_datasets_from_function(dataset)))

    def train_on_batch(self, model, x, y):
        with _worker_losses(self.workers):
            return self._train_on_batch(model, x, y)

    def predict_on_batch(self, model, x):
        with _worker_losses(self.workers):
            return self._predict_on_batch(model, x)

    def _train_on_batch(self, model, x, y):
        # Keras's train step divides each replica's loss by the number of replicas,
        # so the all-reduced gradient is the whole batch's.
        batch = self._distribute((x, y), len(y))
        with self.strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.reset_metrics()
            if self.workers > 1:
                logs = self._step(model, "train", model.train_step, lambda v: self.strategy.reduce("MEAN", v, None))(
                    batch
                )
            else:
                model.make_train_function()
                logs = model.train_function([batch])
        return {k: float(v) for k, v in logs.items()}

    def _predict_on_batch(self, model, x):
        import numpy as np

        # Keras's own predict_on_batch would run the whole batch on every replica.
        x, n = _pad_rows(x, self.replicas)
        batch = self._distribute(x, len(next(iter(x.values()))))
        if self.workers > 1:
            # Keras gathers the replicas' outputs with a collective that takes no bfloat16
            # (TensorFlow 2.21): this gathers float32, which holds every bfloat16 exactly.
            return self._step(model, "predict", _float32_predict(model), self._gather)(batch).numpy()[:n]
        model.make_predict_function()
        return np.asarray(model.predict_function([(batch,)]))[:n]

    def _gather(self, value):
        # Replica order is global order: worker 0's replicas, then worker 1's (`_distribute`).
        return self.strategy.gather(value, axis=0)

    def _step(self, model, kind, step, gather):
        """Keras's step for one distributed batch across workers: `step` on every
        replica, its outputs brought together by `gather` (a `tf.function`, built once
        per model). Keras's own train and predict functions are not used with several
        workers: their mean of the logs fails on scalars there (Keras 3.15, TensorFlow
        issue 72388: "Invalid reduction dimension 0 for input with 0 dimensions")."""
        import tensorflow as tf

        def build():
            inner = tf.function(step, jit_compile=model.jit_compile is True, reduce_retracing=True)

            @tf.function(reduce_retracing=True)
            def distributed(batch):
                return tf.nest.map_structure(gather, self.strategy.run(inner, args=(batch,)))

            return distributed

        return self._function(model, kind, build)

    def describe(self):
        described = {"strategy": self.name, "backend": "tensorflow", "replicas": self.replicas}
        if self.workers > 1:
            described.update(workers=self.workers, worker=self.worker)
        return described


def _pad_rows(x, multiple):
    """`x` (a dict of arrays) with its last row repeated until its rows divide by
    `multiple`, so that a batch splits evenly; and its own row count."""
    import numpy as np

    n = len(next(iter(x.values())))
    extra = -n % multiple
    return {k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for k, v in x.items()}, n


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped (it died, or cannot be reached),
    so this one cannot go on; a run that checkpoints can be resumed by all of them."""


@contextlib.contextmanager
def _worker_losses(workers):
    """The backend's error for a collective whose peer is gone, as a `WorkerLostError`
    that says so in one line. A dead peer shows at once on JAX (its socket is reset)
    and within about ten seconds on TensorFlow (its heartbeats stop);
    `COLLECTIVE_TIMEOUT_SECONDS` bounds a TensorFlow peer that hangs."""
    if workers == 1:
        yield
        return
    try:
        yield
    except Exception as e:
        cause = _lost_cause(e)
        if cause is None:
            raise
        raise WorkerLostError(f"Lost contact with another worker ({cause}), so this one stopped too.") from e


def _lost_cause(error):
    """What the backend said about a lost worker, in a few words; None when `error`
    is about something else."""
    import re

    text = str(error)
    # TensorFlow names the lost task after "unhealthy" or as the "remote target"; its own
    # task appears in the op's name too, so only those places count. JAX's Gloo names none.
    if "unhealthy" in text:
        return f"{_task_names(text.split('unhealthy', 1)[1])} stopped sending heartbeats"
    remote = _task_names(" ".join(re.findall(r"remote target (\S+)", text)))
    if re.search(r"Connection (reset|closed)|Socket closed", text):
        return f"{remote} closed its connection"
    if re.search(r"Connection refused|failed to connect", text):  # Gone before this worker's next call.
        return f"{remote} cannot be reached"
    gloo = re.search(r"Gloo [\w-]+ failed.*", text)  # JAX's collectives on CPU, raised as several error types.
    if gloo:
        return gloo.group(0)[:200]
    if type(error).__name__ in ("UnavailableError", "DeadlineExceededError", "AbortedError"):  # TensorFlow's.
        return f"{type(error).__name__}: {text.strip().splitlines()[0][:200]}"
    return None


def _task_names(text):
    """ "worker 1" for each "/job:worker/replica:0/task:1" in `text`, or "a worker"."""
    import re

    tasks = dict.fromkeys(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text))
    return ", ".join(f"{job} {task}" for job, task in tasks) or "a worker"


def _float32_predict(model):
    import tensorflow as tf

    return lambda batch: tf.cast(model(batch, training=False), tf.float32)


def _worker_of(resolver):
    """`(index, workers, is_chief)` of this process in a `tf.distribute` cluster; the
    chief is the `chief` task, or worker 0 when there is none (TensorFlow's rule)."""
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not jobs:
        return 0, 1, True
    workers = sum(len(tasks) for job, tasks in jobs.items() if job in ("chief", "worker"))
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in jobs)
    index = task_id + (1 if task_type == "worker" and "chief" in jobs else 0)
    return index, workers, chief


def _accelerators():
    """The JAX devices to use: accelerators if any, else CPUs."""
    return keras.distribution.list_devices()


def gemma_layout_map(mesh, backbone_config, model_axis="model", batch_axis="batch"):
    """Where each Gemma weight is split on `mesh`, from the backbone's config.

    The rules are keras-hub's `GemmaBackbone.get_layout_map` (Gemma 3 names its
    layers the same way), except that a weight dimension the mesh axis does not
    divide stays whole: Gemma's single key/value head cannot be split in two.
    """
    c = backbone_config
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    kv_heads = c.get("num_key_value_heads", c["num_query_heads"])
    rules = {
        "token_embedding/embeddings": ((c["vocabulary_size"], c["hidden_dim"]), (model_axis, batch_axis)),
        "decoder_block.*attention.*query.kernel": (
            (c["num_query_heads"], c["hidden_dim"], c["head_dim"]),
            (model_axis, batch_axis, None),
        ),
        "decoder_block.*attention.*(key|value).kernel": (
            (kv_heads, c["hidden_dim"], c["head_dim"]),
            (model_axis, batch_axis, None),
        ),
        "decoder_block.*attention_output.kernel": (
            (c["num_query_heads"], c["head_dim"], c["hidden_dim"]),
            (model_axis, None, batch_axis),
        ),
        "decoder_block.*ffw_gating.*kernel": ((c["hidden_dim"], c["intermediate_dim"]), (batch_axis, model_axis)),
        "decoder_block.*ffw_linear.kernel": ((c["intermediate_dim"], c["hidden_dim"]), (model_axis, batch_axis)),
    }
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, (shape, axes) in rules.items():
        # keras-hub's Gemma halves intermediate_dim for each of its two gating projections.
        layout_map[pattern] = tuple(
            axis if axis is not None and _divides(sizes[axis], dim, pattern) else None for dim, axis in zip(shape, axes)
        )
    return layout_map


def _divides(axis_size, dim, pattern):
    if "ffw" in pattern:
        return dim % (2 * axis_size) == 0
    return dim % axis_size == 0


def create_distribution(strategy="none", devices=None, model_parallel=None, backbone_config=None, multi_worker=False):
    """A distribution plan for training or evaluation.

    Args:
        strategy: `"none"`, `"data"` (data parallel) or `"model"` (weights split
            over a `"model"` mesh axis, batches over `"batch"`; JAX backend).
        devices: how many devices to use (default: all that the backend sees).
        model_parallel: with `"model"`, devices on the model axis (default: all).
        backbone_config: the backbone's config dict, for the `"model"` layout map.
        multi_worker: with `"data"` on TensorFlow, `MultiWorkerMirroredStrategy`
            (hosts from `TF_CONFIG`) instead of `MirroredStrategy`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"distribution must be one of {STRATEGIES}, got {strategy!r}.")
    if strategy == "none":
        return SingleDevice()
    backend = keras.backend.backend()
    if backend == "jax":
        if multi_worker:
            _join_jax_processes(strategy)
        return _jax_distribution(strategy, devices, model_parallel, backbone_config)
    if backend == "tensorflow":
        return _tensorflow_strategy(strategy, devices, multi_worker)
    raise ValueError(f"Distributed runs need the JAX or TensorFlow backend; this is {backend}.")


def _join_jax_processes(strategy):
    """Start JAX's multi-process runtime from Keras's `KERAS_DISTRIBUTION_*` variables
    (`kgemma-launch` sets them; a cluster's scheduler does on real hosts): from then on
    the backend sees every process's devices."""
    import os

    if strategy != "data":
        raise ValueError("--multi-worker goes with --distribution data.")
    if "KERAS_DISTRIBUTION_JOB_ADDRESSES" not in os.environ:
        raise ValueError(
            "--multi-worker on JAX needs KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID; on "
            "one host, kgemma-launch --workers N -- COMMAND sets them for each worker."
        )
    keras.distribution.initialize()


def _pick(available, devices):
    if devices is None:
        return available
    if devices > len(available):
        raise ValueError(f"Asked for {devices} devices, but the backend sees {len(available)}: {available}.")
    return available[:devices]


def _jax_distribution(strategy, devices, model_parallel, backbone_config):
    chosen = _pick(_accelerators(), devices)
    if strategy == "data":
        return KerasDistribution(keras.distribution.DataParallel(devices=chosen), "data", len(chosen), (len(chosen),))
    if backbone_config is None:
        raise ValueError("Model parallelism needs the backbone's config for its layout map.")
    model_parallel = model_parallel or len(chosen)
    if len(chosen) % model_parallel:
        raise ValueError(f"{len(chosen)} devices do not split into model-parallel groups of {model_parallel}.")
    shape = (len(chosen) // model_parallel, model_parallel)
    mesh = keras.distribution.DeviceMesh(shape=shape, axis_names=("batch", "model"), devices=chosen)
    distribution = keras.distribution.ModelParallel(
        layout_map=gemma_layout_map(mesh, backbone_config), batch_dim_name="batch"
    )
    return KerasDistribution(distribution, "model", shape[0], shape)


def _tensorflow_strategy(strategy, devices, multi_worker):
    import tensorflow as tf

    if strategy == "model":
        raise ValueError(
            "Model parallelism runs on keras.distribution, which needs the JAX backend: set KERAS_BACKEND=jax."
        )
    if multi_worker:
        return TensorFlowStrategy(_multi_worker_strategy(), "multi_worker_mirrored")
    gpus = tf.config.list_logical_devices("GPU")
    available = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return TensorFlowStrategy(tf.distribute.MirroredStrategy(devices=_pick(available, devices)), "mirrored")


# How long a collective (an all-reduce, a broadcast) waits for the other workers: a
# worker that died must stop the run with an error, not leave the others waiting forever.
# Long enough for the slowest step or the prefix pass of a large batch on a CPU.
COLLECTIVE_TIMEOUT_SECONDS = 600.0


def _multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` over the workers `TF_CONFIG` names, with a
    timeout on its collectives, its variables' first values sent as float32 when
    they are bfloat16 (`_broadcast_bfloat16_as_float32`)."""
    import os

    import tensorflow as tf

    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "--multi-worker needs TF_CONFIG naming the workers and this one's index; on one host, "
            "kgemma-launch --workers N -- COMMAND sets it for each worker."
        )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    _broadcast_bfloat16_as_float32(strategy.extended)
    return strategy


def _broadcast_bfloat16_as_float32(extended):
    """The chief sends each new variable's first value to the other workers with a
    collective broadcast, which on CPU takes no bfloat16 (TensorFlow 2.21: "Value for
    attr 'T' of bfloat16 is not in the list of allowed values"). Send those values as
    float32, exact for every bfloat16, and cast them back on arrival. (A private
    method of the strategy, wrapped on this one instance; tests/test_launch.py trains
    a bfloat16 model on two workers, so a TensorFlow that changes it fails there.)"""
    import tensorflow as tf

    original = extended._get_variable_creator_initial_value

    def initial_value(replica_id, device, primary_var, **kwargs):
        dtype = kwargs.get("dtype")
        if replica_id != 0 or dtype is None or tf.as_dtype(dtype) != tf.bfloat16:
            return original(replica_id=replica_id, device=device, primary_var=primary_var, **kwargs)
        value = kwargs["initial_value"]

        def as_float32():
            v = value() if callable(value) else value
            return tf.cast(tf.convert_to_tensor(getattr(v, "wrapped_value", v), dtype=tf.bfloat16), tf.float32)

        sent = original(
            replica_id=replica_id,
            device=device,
            primary_var=primary_var,
            **{**kwargs, "initial_value": as_float32, "dtype": tf.float32},
        )
        return lambda: tf.cast(sent(), tf.bfloat16)

    extended._get_variable_creator_initial_value = initial_value

"""Data and model parallelism on the engines Keras already has.

On the JAX backend, `keras.distribution`: `DataParallel`, and `ModelParallel` over a
`DeviceMesh` with a layout map of the Gemma weights. On the TensorFlow backend,
`tf.distribute`: `MirroredStrategy` on one host, `MultiWorkerMirroredStrategy`
(configured by `TF_CONFIG`) on several. Each plan has a `scope()` to build the
model in and a `train_on_batch` that splits a global batch across replicas.
"""

import contextlib

import keras

STRATEGIES = ("none", "data", "model")


class SingleDevice:
    """No distribution: Keras's own steps on the default device."""

    replicas = 1

    def scope(self):
        return contextlib.nullcontext()

    def train_on_batch(self, model, x, y):
        return keras.Model.train_on_batch(model, x, y, return_dict=True)

    def predict_on_batch(self, model, x):
        return keras.ops.convert_to_numpy(keras.Model.predict_on_batch(model, x))

    def describe(self):
        return {"strategy": "none", "backend": keras.backend.backend(), "replicas": 1}


class KerasDistribution(SingleDevice):
    """A `keras.distribution` plan (JAX): Keras shards every batch itself."""

    def __init__(self, distribution, strategy, replicas, mesh_shape):
        self.distribution = distribution
        self.strategy = strategy
        self.replicas = replicas
        self.mesh_shape = mesh_shape

    def scope(self):
        return self.distribution.scope()

    def train_on_batch(self, model, x, y):
        # Keras's JAX trainer reads the distribution in force, not the one a model was built in.
        with self.distribution.scope():
            return keras.Model.train_on_batch(model, x, y, return_dict=True)

    def predict_on_batch(self, model, x):
        with self.distribution.scope():
            return keras.ops.convert_to_numpy(keras.Model.predict_on_batch(model, x))

    def describe(self):
        return {
            "strategy": self.strategy,
            "backend": "jax",
            "replicas": self.replicas,
            "mesh_shape": list(self.mesh_shape),
        }


class TensorFlowStrategy(SingleDevice):
    """A `tf.distribute` strategy; each step's batch is split across its replicas."""

    def __init__(self, strategy, name):
        self.strategy = strategy
        self.name = name
        self.replicas = strategy.num_replicas_in_sync

    def scope(self):
        return self.strategy.scope()

    def train_on_batch(self, model, x, y):
        import tensorflow as tf

        # A one-batch dataset, distributed: each replica gets len(y) / replicas rows,
        # and Keras's train step sums the replicas' gradients.
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(y))
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        with self.strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.make_train_function()
            model.reset_metrics()
            logs = model.train_function(iterator)
        return {k: float(v) for k, v in logs.items()}

    def predict_on_batch(self, model, x):
        import numpy as np
        import tensorflow as tf

        # Keras's own predict_on_batch would run the whole batch on every replica.
        n = len(next(iter(x.values())))
        extra = -n % self.replicas  # Repeat the last row so the batch splits evenly.
        x = {k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for k, v in x.items()}
        dataset = tf.data.Dataset.from_tensor_slices(x).batch(n + extra)
        batch = next(iter(self.strategy.experimental_distribute_dataset(dataset)))
        model.make_predict_function()
        return np.asarray(model.predict_function([(batch,)]))[:n]

    def describe(self):
        return {"strategy": self.name, "backend": "tensorflow", "replicas": self.replicas}


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
        return _jax_distribution(strategy, devices, model_parallel, backbone_config)
    if backend == "tensorflow":
        return _tensorflow_strategy(strategy, devices, multi_worker)
    raise ValueError(f"Distributed runs need the JAX or TensorFlow backend; this is {backend}.")


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
        return TensorFlowStrategy(tf.distribute.MultiWorkerMirroredStrategy(), "multi_worker_mirrored")
    gpus = tf.config.list_logical_devices("GPU")
    available = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return TensorFlowStrategy(tf.distribute.MirroredStrategy(devices=_pick(available, devices)), "mirrored")

"""Run by tests/test_distribution.py in a fresh process, because devices must be set
up before the backend starts: 2 logical CPUs for TensorFlow, or 2 virtual JAX CPU
devices (XLA_FLAGS=--xla_force_host_platform_device_count=2).

    KERAS_BACKEND=tensorflow python tests/distributed_steps.py data OUT.json

It builds one tiny classifier on one device and a copy under the distribution plan,
then prints their forward outputs, losses and weights after two training steps.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from kgemma import GemmaSentimentClassifier  # noqa: E402
from kgemma import GemmaSentimentClassifierPreprocessor  # noqa: E402
from kgemma.scaling import create_distribution  # noqa: E402
from kgemma.scaling.distribution import SingleDevice  # noqa: E402
from kgemma.training import TrainingConfig  # noqa: E402
from kgemma.training.trainer import training_model  # noqa: E402
from tests.conftest import CORPUS  # noqa: E402
from tests.conftest import tiny_backbone  # noqa: E402
from tests.conftest import tiny_tokenizer  # noqa: E402
from tests.conftest import train_spm_proto  # noqa: E402


def build(plan, tokenizer):
    with plan.scope():
        backbone = tiny_backbone("gemma3", tokenizer.vocabulary_size(), seed=0)
        preprocessor = GemmaSentimentClassifierPreprocessor(tokenizer, sequence_length=32)
        return GemmaSentimentClassifier(backbone=backbone, preprocessor=preprocessor, dropout=0.0, lora_dropout=0.0)


def run(classifier, plan, features, labels):
    config = TrainingConfig(learning_rate=1e-2, dropout=0.0, lora_dropout=0.0)
    logits = plan.predict_on_batch(classifier, features)
    model, _ = training_model(classifier, config, 10, plan)
    losses = [plan.train_on_batch(model, features, labels)["loss"] for _ in range(2)]
    return {
        "logits": logits.tolist(),
        "losses": losses,
        "weights": [np.asarray(w).tolist() for w in classifier.trainable_weights],
    }


def main(strategy, output):
    tokenizer = tiny_tokenizer("gemma3", train_spm_proto())
    config = tiny_backbone("gemma3", tokenizer.vocabulary_size()).get_config()
    plan = create_distribution(strategy, backbone_config=config)
    single, distributed = build(SingleDevice(), tokenizer), build(plan, tokenizer)
    rng = np.random.default_rng(0)
    for weight in single.trainable_weights:  # Nonzero LoRA and head, so every part matters.
        weight.assign(rng.normal(scale=0.3, size=weight.shape))
    distributed.set_weights(single.get_weights())
    features = {k: np.asarray(v) for k, v in single.preprocessor(CORPUS + ["One more review."]).items()}
    labels = np.arange(8) % 2
    query = distributed.backbone.get_layer("decoder_block_0").attention.query_dense.kernel
    result = {
        "plan": plan.describe(),
        "query_kernel_layout": str(getattr(query.value, "sharding", "")),
        "single": run(single, SingleDevice(), features, labels),
        "distributed": run(distributed, plan, features, labels),
    }
    Path(output).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

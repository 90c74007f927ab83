"""kgemma: Gemma sentiment classifiers with LoRA, on Keras 3 and keras-hub."""

__version__ = "0.1.0"

from kgemma.startup import quiet_command_output

# Before Keras loads TensorFlow: kgemma's commands keep TensorFlow's start-up lines out of their output.
quiet_command_output()

from kgemma.model import GemmaSentimentClassifier  # noqa: E402
from kgemma.model import GemmaSentimentClassifierPreprocessor  # noqa: E402
from kgemma.model import LoRAAdapter  # noqa: E402
from kgemma.model import SequencePooling  # noqa: E402

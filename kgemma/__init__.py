"""kgemma: Gemma sentiment classifiers with LoRA, on Keras 3 and keras-hub."""

__version__ = "0.1.0"

from kgemma.model import GemmaSentimentClassifier
from kgemma.model import GemmaSentimentClassifierPreprocessor
from kgemma.model import LoRAAdapter
from kgemma.model import SequencePooling

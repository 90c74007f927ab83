"""The model: preprocessor -> backbone (+ LoRA) -> pooling -> head."""

from kgemma.model.classifier import GemmaSentimentClassifier
from kgemma.model.lora import LORA_TARGETS
from kgemma.model.lora import LoRAAdapter
from kgemma.model.pooling import SequencePooling
from kgemma.model.preprocessor import GemmaSentimentClassifierPreprocessor

"""Running on many devices: distribution plans on Keras's engines, memory and cost estimates."""

from kgemma.scaling.distribution import STRATEGIES
from kgemma.scaling.distribution import WorkerLostError
from kgemma.scaling.distribution import create_distribution
from kgemma.scaling.distribution import gemma_layout_map
from kgemma.scaling.memory import KNOWN_CONFIGS
from kgemma.scaling.memory import estimate_cost
from kgemma.scaling.memory import estimate_memory
from kgemma.scaling.memory import parameter_counts

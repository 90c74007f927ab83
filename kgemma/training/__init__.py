"""Fine-tuning: the fine-tuning report's recipe as defaults, named recipes, resumable, with history and summary."""

from kgemma.training.callbacks import TensorBoard
from kgemma.training.config import TrainingConfig
from kgemma.training.recipes import RECIPES
from kgemma.training.recipes import recipe_config
from kgemma.training.run import load_training_data
from kgemma.training.run import run_training
from kgemma.training.trainer import fit
from kgemma.training.trainer import make_optimizer

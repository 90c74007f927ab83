"""Evaluation from predictions: metrics, calibration, slices, contrast pairs, reports.

It never imports the model or training: it works on labels, logits and texts.
"""

from kgemma.evaluation.baseline import fit_tfidf_baseline
from kgemma.evaluation.calibration import apply_temperature
from kgemma.evaluation.calibration import expected_calibration_error
from kgemma.evaluation.calibration import fit_temperature
from kgemma.evaluation.calibration import reliability_bins
from kgemma.evaluation.contrast import contrast_metrics
from kgemma.evaluation.contrast import read_contrast
from kgemma.evaluation.metrics import bootstrap_interval
from kgemma.evaluation.metrics import classification_metrics
from kgemma.evaluation.mistakes import confident_mistakes
from kgemma.evaluation.predictions import merge_shards
from kgemma.evaluation.predictions import parse_shard
from kgemma.evaluation.predictions import shard_rows
from kgemma.evaluation.predictions import stream_predictions
from kgemma.evaluation.predictions import write_shard_info
from kgemma.evaluation.report import summary_rows
from kgemma.evaluation.report import write_report
from kgemma.evaluation.run import classifier_explainer
from kgemma.evaluation.run import classifier_scorer
from kgemma.evaluation.run import run_evaluation
from kgemma.evaluation.slices import BUILTIN_SLICES
from kgemma.evaluation.slices import Slice
from kgemma.evaluation.slices import custom_slice
from kgemma.evaluation.suite import evaluate_predictions

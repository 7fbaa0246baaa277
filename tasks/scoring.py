"""Metric names as every room shows and compares them: which way is better, and how a person reads the name.

Classification scores (macro_f1, accuracy, ...) are better higher; regression errors (rmse, mae) lower. The gate,
early stopping and the sweep compare through `better`, so no room assumes that a larger number wins.
"""
from __future__ import annotations

LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "loss", "eval_loss", "perplexity", "expected_calibration_error"})
DISPLAY = {"answer_f1": "answer-F1", "exact_match": "exact match", "chrf": "chrF", "rouge_l": "ROUGE-L",
           "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "entity_f1": "entity-F1", "accuracy": "accuracy",
           "rmse": "RMSE", "mae": "MAE", "r2": "R²", "spearman": "Spearman"}


# The headline columns a report shows, in this order, where the scores have them (classifiers; regressions).
SCORE_COLUMNS = ("accuracy", "macro_f1", "weighted_f1", "rmse", "mae", "r2", "spearman", "answer_f1", "exact_match",
                 "chrf", "rouge_l")


def shown(scores: dict) -> list[str]:
    """The headline metrics these scores carry, in SCORE_COLUMNS order."""
    return [m for m in SCORE_COLUMNS if m in scores]


def fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def gain(metric: str, candidate: float, reference: float) -> float:
    """How much better the candidate is than the reference, in the metric's units (negative: worse)."""
    return candidate - reference if higher_is_better(metric) else reference - candidate


def metric_name(metric: str) -> str:
    return DISPLAY.get(metric, metric)

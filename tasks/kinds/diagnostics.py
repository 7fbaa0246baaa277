"""What evaluate reports and plots beside a kind's scores, per objective.

Classification (text, tokens, images): expected calibration error and the reliability curve over the kind's units
(rows, or words for tokens), and the confusion matrix. Regression: the residuals' statistics and the
predicted-against-actual points. Evaluate writes whatever a kind returns; it never asks which objective it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class Plot:
    name: str                                   # the DVC plot's file name under reports/eval/plots/
    template: Literal["confusion", "linear", "scatter"]
    title: str
    points: list[dict] = field(default_factory=list)  # linear / scatter: one dict per point
    x: str = ""
    y: str = ""
    actual: list = field(default_factory=list)        # confusion: one entry per unit
    predicted: list = field(default_factory=list)


@dataclass
class Diagnostics:
    model: dict    # merged into the model's scores (metrics["model"])
    report: dict   # top-level entries of reports/metrics.json
    plots: list[Plot]


def reliability(correct: np.ndarray, conf: np.ndarray, n_bins: int) -> tuple[float, list[dict]]:
    """Expected calibration error over equal-width confidence bins, and the curve's points."""
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece, points = 0.0, []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            gap = abs(correct[mask].mean() - conf[mask].mean())
            ece += gap * mask.mean()
            points.append({"confidence": float(conf[mask].mean()), "accuracy": float(correct[mask].mean()),
                           "rows": int(mask.sum())})
    return float(ece), points


def classification(unit_true: np.ndarray, unit_probs: np.ndarray, labels: list[str], bins: int) -> Diagnostics:
    from sklearn.metrics import confusion_matrix

    unit_pred = np.array(labels, dtype=object)[unit_probs.argmax(axis=1)]
    ece, curve = reliability(unit_true == unit_pred, unit_probs.max(axis=1), bins)
    matrix = confusion_matrix(unit_true, unit_pred, labels=labels).tolist()
    return Diagnostics(
        model={"expected_calibration_error": ece},
        report={"confusion_matrix": {"labels": labels, "rows_actual_cols_predicted": matrix}},
        plots=[Plot("confusion_matrix", "confusion", "Confusion matrix (test split)",
                    actual=list(unit_true), predicted=list(unit_pred)),
               Plot("reliability", "linear", "Reliability curve (test split)", curve, "confidence", "accuracy")])


def regression(actual: np.ndarray, predicted: np.ndarray, max_points: int = 2000) -> Diagnostics:
    residual = predicted - actual
    keep = np.linspace(0, len(actual) - 1, min(len(actual), max_points)).astype(int) if len(actual) else []
    points = [{"actual": float(actual[i]), "predicted": float(predicted[i])} for i in keep]
    stats = {"mean": float(residual.mean()), "std": float(residual.std()),
             "p05": float(np.percentile(residual, 5)), "p95": float(np.percentile(residual, 95))} if len(actual) \
        else {}
    return Diagnostics(model={}, report={"residuals": stats},
                       plots=[Plot("predicted_vs_actual", "scatter", "Predicted against actual (test split)",
                                   points, "actual", "predicted")])

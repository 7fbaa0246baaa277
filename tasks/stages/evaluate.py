"""Stage `evaluate`: score the candidate on the test split beside the kind's baseline, for any task kind.

The baseline (TF-IDF + logistic regression for text; a word-to-tag dictionary for tokens; logistic regression on the
frozen pre-trained backbone's features for images) is trained on exactly the candidate's training rows and scored on
the same test rows, so the comparison in reports/metrics.json is like for like. Every kind's scores share one shape
(accuracy, macro_f1, weighted_f1, per_class), which is what the gate, the registry and the model card read.
Confusion matrix and reliability curve go to reports/eval/ as DVC plots (dvclive); calibration (ECE), scores per
origin (old test rows, each batch's holdout) and optional per-slice metrics go beside the headline figures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.config import EvaluateConfig
from tasks.files.tables import write_text
from tasks.inference import Predictor
from tasks.kinds import get_kind
from tasks.kinds.base import Kind, read_split
from tasks.metrics import scores_by_origin


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


def slice_scores(kind: Kind, test: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                 cfg: EvaluateConfig) -> Optional[dict]:
    if not cfg.slice_column or cfg.slice_column not in test.columns:
        return None
    out = {}
    for value, idx in test.groupby(cfg.slice_column).indices.items():
        if len(idx) >= cfg.min_slice_rows:
            s = kind.scores(y_true[idx], y_pred[idx], labels)
            out[str(value)] = {"rows": len(idx), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
    return out


def run(cfg: EvaluateConfig, processed_dir: str | Path, model_dir: str | Path, metrics_path: str | Path,
        plots_dir: Optional[str | Path] = None, seed: int = 0, base_model: str = "default",
        kind: Kind | str = "text-classification", precision: str = "auto") -> dict:
    kind = get_kind(kind)
    processed = Path(processed_dir)
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    test = read_split(processed / "test.parquet")
    predictor = Predictor(model_dir, batch_size=cfg.batch_size, precision=precision)
    predicted = predictor.predict(test, desc="evaluate")
    y_true, y_pred = kind.truth(test), predicted.rows

    train = read_split(processed / "train.parquet")
    base_pred = kind.baseline(train, test, labels, cfg, seed, base_model)

    # Calibration and the confusion matrix read the kind's units: rows, or words for token classification.
    unit_true = kind.unit_truth(test, predicted)
    unit_pred = np.array(labels, dtype=object)[predicted.unit_probs.argmax(axis=1)]
    ece, curve = reliability(unit_true == unit_pred, predicted.unit_probs.max(axis=1), cfg.calibration_bins)
    metrics = {"n_test": len(test), "n_train": len(train),
               "model": {**kind.scores(y_true, y_pred, labels), "expected_calibration_error": ece},
               kind.baseline_name: kind.scores(y_true, base_pred, labels), "baseline_name": kind.baseline_name,
               "baseline_description": kind.baseline_description}
    metrics["macro_f1_gain_over_baseline"] = metrics["model"]["macro_f1"] - metrics[kind.baseline_name]["macro_f1"]
    from sklearn.metrics import confusion_matrix

    metrics["confusion_matrix"] = {"labels": labels, "rows_actual_cols_predicted":
                                   confusion_matrix(unit_true, unit_pred, labels=labels).tolist()}
    metrics["by_origin"] = scores_by_origin(kind, test, y_true, y_pred, labels)
    slices = slice_scores(kind, test, y_true, y_pred, labels, cfg)
    if slices is not None:
        metrics["slices"] = {cfg.slice_column: slices}
    write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", metrics_path)
    if plots_dir is not None:
        write_plots(plots_dir, list(unit_true), list(unit_pred), curve)
    return metrics


def write_plots(plots_dir: str | Path, actual: list[str], predicted: list[str], curve: list[dict]) -> None:
    from dvclive import Live  # reporting only

    with Live(dir=str(plots_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_sklearn_plot("confusion_matrix", actual, predicted, name="confusion_matrix",
                              title="Confusion matrix (test split)")
        live.log_plot("reliability", curve, x="confidence", y="accuracy", template="linear",
                      title="Reliability curve (test split)")
    Path(plots_dir, "metrics.json").unlink(missing_ok=True)  # dvclive's empty summary; metrics live in metrics_path
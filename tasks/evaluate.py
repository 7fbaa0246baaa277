"""Stage `evaluate`: score the candidate on the test split beside a TF-IDF + logistic-regression baseline.

The baseline is trained on exactly the candidate's training rows and scored on the same test rows, so the
comparison in reports/metrics.json is like for like. Confusion matrix and reliability curve go to reports/eval/
as DVC plots (dvclive); calibration (ECE) and optional per-slice metrics go beside the headline figures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from sklearn.pipeline import make_pipeline

from tasks.batching import TokenizedSplit
from tasks.config import EvaluateConfig
from tasks.predict import Predictor
from tasks.prepare import ORIGIN
from tasks.tables import write_text


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    report = classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=labels,
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=list(range(len(labels))), zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", labels=list(range(len(labels))),
                                      zero_division=0)),
        "per_class": {name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
                      for name in labels},
    }


def reliability(y_true: np.ndarray, probs: np.ndarray, n_bins: int) -> tuple[float, list[dict]]:
    """Expected calibration error over equal-width confidence bins, and the curve's points."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
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


def baseline_predictions(train_text: pd.Series, train_y: np.ndarray, test_text: pd.Series, cfg: EvaluateConfig,
                         seed: int) -> np.ndarray:
    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=cfg.baseline_max_features),
        LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
    )
    pipe.fit(train_text, train_y)
    return pipe.predict(test_text)


def scores_by_origin(test: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """The old test rows ("source") and each pooled batch's holdout, scored apart: the gate checks each."""
    if ORIGIN not in test.columns:
        return {}
    return {str(origin): {**scores(y_true[idx], y_pred[idx], labels), "rows": len(idx)}
            for origin, idx in test.groupby(ORIGIN, sort=True).indices.items()}


def slice_scores(test: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                 cfg: EvaluateConfig) -> Optional[dict]:
    if not cfg.slice_column or cfg.slice_column not in test.columns:
        return None
    out = {}
    for value, idx in test.groupby(cfg.slice_column).indices.items():
        if len(idx) >= cfg.min_slice_rows:
            s = scores(y_true[idx], y_pred[idx], labels)
            out[str(value)] = {"rows": len(idx), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
    return out


def run(cfg: EvaluateConfig, processed_dir: str | Path, model_dir: str | Path, metrics_path: str | Path,
        plots_dir: Optional[str | Path] = None, seed: int = 0) -> dict:
    processed = Path(processed_dir)
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    test_df = pd.read_parquet(processed / "test.parquet")
    test = TokenizedSplit.from_frame(test_df)
    probs = Predictor(model_dir, batch_size=cfg.batch_size).split_probabilities(test, desc="evaluate")
    model_pred = probs.argmax(-1)

    train_df = pd.read_parquet(processed / "train.parquet", columns=["text", "label_id"])
    base_pred = baseline_predictions(train_df["text"], train_df["label_id"].to_numpy(), test_df["text"], cfg, seed)

    ece, curve = reliability(test.labels, probs, cfg.calibration_bins)
    metrics = {"n_test": len(test), "n_train": len(train_df),
               "model": {**scores(test.labels, model_pred, labels), "expected_calibration_error": ece},
               "baseline_tfidf_logreg": scores(test.labels, base_pred, labels)}
    metrics["macro_f1_gain_over_baseline"] = metrics["model"]["macro_f1"] - metrics["baseline_tfidf_logreg"]["macro_f1"]
    metrics["confusion_matrix"] = {"labels": labels, "rows_actual_cols_predicted":
                                   confusion_matrix(test.labels, model_pred, labels=range(len(labels))).tolist()}
    metrics["by_origin"] = scores_by_origin(test_df, test.labels, model_pred, labels)
    slices = slice_scores(test_df, test.labels, model_pred, labels, cfg)
    if slices is not None:
        metrics["slices"] = {cfg.slice_column: slices}
    write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", metrics_path)
    if plots_dir is not None:
        write_plots(plots_dir, [labels[i] for i in test.labels], [labels[i] for i in model_pred], curve)
    return metrics


def write_plots(plots_dir: str | Path, actual: list[str], predicted: list[str], curve: list[dict]) -> None:
    from dvclive import Live  # reporting only

    with Live(dir=str(plots_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_sklearn_plot("confusion_matrix", actual, predicted, name="confusion_matrix",
                              title="Confusion matrix (test split)")
        live.log_plot("reliability", curve, x="confidence", y="accuracy", template="linear",
                      title="Reliability curve (test split)")
    Path(plots_dir, "metrics.json").unlink(missing_ok=True)  # dvclive's empty summary; metrics live in metrics_path

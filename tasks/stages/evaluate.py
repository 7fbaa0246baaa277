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

from tasks.config import EvaluateConfig, GenerateConfig
from tasks.files.tables import write_text
from tasks.inference import Predictor
from tasks.kinds import get_kind
from tasks.kinds.base import Kind, read_split
from tasks.kinds.diagnostics import Plot
from tasks.metrics import scores_by_origin
from tasks.scoring import gain


def slice_scores(kind: Kind, test: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                 cfg: EvaluateConfig) -> Optional[dict]:
    if not cfg.slice_column or cfg.slice_column not in test.columns:
        return None
    out = {}
    for value, idx in test.groupby(cfg.slice_column).indices.items():
        if len(idx) >= cfg.min_slice_rows:
            s = kind.scores(y_true[idx], y_pred[idx], labels)
            out[str(value)] = {"rows": len(idx), **{m: s[m] for m in (kind.headline, *kind.val_metrics) if m in s}}
    return out


def run(cfg: EvaluateConfig, processed_dir: str | Path, model_dir: str | Path, metrics_path: str | Path,
        plots_dir: Optional[str | Path] = None, seed: int = 0, base_model: str = "default",
        kind: Kind | str = "text-classification", precision: str = "auto",
        generation: Optional[GenerateConfig] = None) -> dict:
    kind = get_kind(kind)
    processed = Path(processed_dir)
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    test = read_split(processed / "test.parquet")
    predictor = Predictor(model_dir, batch_size=cfg.batch_size, precision=precision)
    predicted = predictor.predict(test, desc="evaluate")
    y_true, y_pred = kind.truth(test), predicted.rows

    train = read_split(processed / "train.parquet")
    base_pred = kind.baseline(train, test, labels, cfg, seed, base_model, generation)

    # Beside the scores, what the kind's objective adds: calibration and the confusion matrix over its units (rows,
    # or words), or the residuals; and its plots.
    diagnostics = kind.diagnostics(test, predicted, labels, cfg)
    metrics = {"n_test": len(test), "n_train": len(train),
               "model": {**kind.scores(y_true, y_pred, labels), **diagnostics.model},
               kind.baseline_name: kind.scores(y_true, base_pred, labels), "baseline_name": kind.baseline_name,
               "baseline_description": kind.baseline_description, "headline": kind.headline,
               **diagnostics.report}
    metrics[f"{kind.headline}_gain_over_baseline"] = gain(kind.headline, metrics["model"][kind.headline],
                                                          metrics[kind.baseline_name][kind.headline])
    metrics["by_origin"] = scores_by_origin(kind, test, y_true, y_pred, labels)
    slices = slice_scores(kind, test, y_true, y_pred, labels, cfg)
    if slices is not None:
        metrics["slices"] = {cfg.slice_column: slices}
    write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", metrics_path)
    if plots_dir is not None:
        write_plots(plots_dir, diagnostics.plots)
    return metrics


def write_plots(plots_dir: str | Path, plots: list[Plot]) -> None:
    from dvclive import Live  # reporting only

    Path(plots_dir, "plots").mkdir(parents=True, exist_ok=True)  # the DVC output exists even when a kind draws none
    with Live(dir=str(plots_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for plot in plots:
            if plot.template == "confusion":
                live.log_sklearn_plot("confusion_matrix", plot.actual, plot.predicted, name=plot.name,
                                      title=plot.title)
            else:
                live.log_plot(plot.name, plot.points, x=plot.x, y=plot.y, template=plot.template, title=plot.title)
    Path(plots_dir, "metrics.json").unlink(missing_ok=True)  # dvclive's empty summary; metrics live in metrics_path

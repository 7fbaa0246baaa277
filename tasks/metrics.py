"""Reading evaluate's report (reports/metrics.json): the baseline beside the model, scores per origin (the old test
rows, each pooled batch's holdout), and the report as markdown for the Prefect UI. The gate, the CLI and the flows
read the report through these, never by its layout."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tasks.kinds.base import ORIGIN, Kind
from tasks.scoring import fmt, metric_name, shown

# Reports written before they carried `baseline_description` name their baseline only.
EARLIER_BASELINES = {"baseline_tfidf_logreg": "TF-IDF + logistic regression",
                     "baseline_word_tag_dictionary": "word -> most frequent tag (dictionary)",
                     "baseline_frozen_features_logreg": "logistic regression on frozen pre-trained features"}


class Baseline(NamedTuple):
    name: str         # the key of its scores in the report
    description: str  # in words, for people
    scores: dict


def baseline_of(metrics: dict) -> Baseline:
    """The baseline beside the model in an evaluate report (reports written before kinds: TF-IDF)."""
    name = metrics.get("baseline_name", "baseline_tfidf_logreg")
    return Baseline(name, metrics.get("baseline_description") or EARLIER_BASELINES.get(name, name), metrics[name])


def scores_by_origin(kind: Kind, test: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray,
                     labels: list[str]) -> dict:
    """The old test rows ("source") and each pooled batch's holdout, scored apart: the gate checks each."""
    if ORIGIN not in test.columns:
        return {}
    return {str(origin): {**kind.scores(y_true[idx], y_pred[idx], labels), "rows": len(idx)}
            for origin, idx in test.groupby(ORIGIN, sort=True).indices.items()}


def metrics_markdown(metrics_path: str | Path) -> str:
    m = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    baseline = baseline_of(m)
    base, model = baseline.scores, m["model"]
    columns = shown(model)
    rows = ["| | " + " | ".join(metric_name(c) for c in columns) + " |", "|---|" + "---|" * len(columns),
            "| fine-tuned model | " + " | ".join(fmt(model[c]) for c in columns) + " |",
            f"| {baseline.description} | " + " | ".join(fmt(base.get(c)) for c in columns) + " |"]
    details = []
    if "per_class" in model:
        details = ["## Fine-tuned model per class", "", "| class | precision | recall | F1 | support |",
                   "|---|---|---|---|---|"] + [
            f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1-score']:.3f} | {int(v['support'])} |"
            for name, v in model["per_class"].items()]
    if m.get("residuals"):
        r = m["residuals"]
        details = ["## Residuals (predicted - actual)", "", f"mean {r['mean']:+.4f}, std {r['std']:.4f}, "
                   f"5th-95th percentile {r['p05']:+.4f} .. {r['p95']:+.4f}"]
    return "\n".join([f"# Evaluation on {m['n_test']} test rows (trained on {m['n_train']})", "", *rows, "",
                      *details])

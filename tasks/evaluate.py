"""Stage `evaluate`: score the candidate on the test split beside a TF-IDF + logistic-regression baseline.

The baseline is trained on exactly the candidate's training rows and scored on the same test rows, so the
comparison in reports/metrics.json is like for like.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, f1_score
from sklearn.pipeline import make_pipeline

from tasks.batching import TokenizedSplit, pick_device, predict_proba
from tasks.config import EvaluateConfig


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    report = classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=labels,
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted")),
        "per_class": {name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
                      for name in labels},
    }


def baseline_predictions(train_text: pd.Series, train_y: np.ndarray, test_text: pd.Series, cfg: EvaluateConfig,
                         seed: int) -> np.ndarray:
    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=cfg.baseline_max_features),
        LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
    )
    pipe.fit(train_text, train_y)
    return pipe.predict(test_text)


def run(cfg: EvaluateConfig, processed_dir: str | Path, model_dir: str | Path, metrics_path: str | Path,
        seed: int = 0) -> dict:
    from transformers import AutoModelForSequenceClassification
    import torch

    processed = Path(processed_dir)
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    test = TokenizedSplit.read(processed / "test.parquet")
    device = pick_device()
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).to(device)
    model_pred = predict_proba(model, test, model.config.pad_token_id or 0, cfg.batch_size, device,
                               desc="evaluate").argmax(-1)

    train_df = pd.read_parquet(processed / "train.parquet", columns=["text", "label_id"])
    test_text = pd.read_parquet(processed / "test.parquet", columns=["text"])["text"]
    base_pred = baseline_predictions(train_df["text"], train_df["label_id"].to_numpy(), test_text, cfg, seed)

    metrics = {"n_test": len(test), "n_train": len(train_df),
               "model": scores(test.labels, model_pred, labels),
               "baseline_tfidf_logreg": scores(test.labels, base_pred, labels)}
    metrics["macro_f1_gain_over_baseline"] = metrics["model"]["macro_f1"] - metrics["baseline_tfidf_logreg"]["macro_f1"]
    out = Path(metrics_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics

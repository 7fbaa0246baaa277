"""What every "one label per row" kind shares (text and image classification): the label rules, label cleaning, the
quarantine display, class counts and strata, per-row prediction with class probabilities, scores, the prediction
columns and the drift profile's tail. A subclass states how it reads, encodes and describes its inputs."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from tasks.kinds.base import LABEL, Kind, Predicted, profile_tail


def label_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """accuracy, macro/weighted F1 over every label, per-class report."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)),
        "per_class": {name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
                      for name in labels},
    }


def label_ids(labels: pd.Series, names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    return labels.map(index).astype("int64").to_numpy()


class RowLabelKind(Kind):
    display_column: ClassVar[str]  # the input column the quarantine file shows beside the label (text, path)

    @abstractmethod
    def describe(self, frame: pd.DataFrame, processor: Any) -> pd.DataFrame:
        """The kind's drift columns for these rows (text and descriptors; brightness, sizes), one row per input."""

    # --- data --------------------------------------------------------------------------------------------------
    def label_rules(self, df: pd.DataFrame, label_param: str, allowed: Optional[set[str]], labelled: bool, mark,
                    where: Any = "") -> pd.Series:
        """Blank and unknown labels (first rule wins); returns the stripped labels for the kind's later rules."""
        label = df[LABEL].astype("string").fillna("").str.strip() if labelled else pd.Series("", index=df.index)
        if labelled:
            mark(label == "", "blank_label", f"no value in column {label_param!r}" + where)
            if allowed is not None:
                mark(~label.isin(allowed), "unknown_label",
                     "label " + label + " is not one of " + repr(sorted(allowed)) + where)
        return label

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        if labelled:
            accepted = accepted.assign(**{LABEL: accepted[LABEL].astype("string").fillna("").str.strip().astype(str)})
        return accepted

    def display(self, df: pd.DataFrame) -> pd.DataFrame:
        label = df[LABEL] if LABEL in df.columns else pd.Series("", index=df.index)
        return pd.DataFrame({self.display_column: df[self.display_column].astype("string").fillna(""),
                             LABEL: label.astype("string").fillna("")})

    def class_values(self, df: pd.DataFrame) -> pd.Series:
        return df[LABEL].astype(str)

    def strata(self, df: pd.DataFrame) -> pd.Series:
        return df[LABEL].astype(str)

    def label_set(self, df: pd.DataFrame) -> list[str]:
        return sorted(df[LABEL].astype(str).unique().tolist())

    def augment(self, train: pd.DataFrame, cfg, seed: int) -> pd.DataFrame:
        return train.assign(augmented=False)

    def saved_processor(self, processor: Any, train: pd.DataFrame) -> Any:
        return processor

    # --- model -------------------------------------------------------------------------------------------------
    def truth(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[LABEL].astype(str).to_numpy()

    def predict(self, model, processor, frame, labels, batch_size, device, embeddings=False, desc="predict",
                max_length=None) -> Predicted:
        from tasks.engine.batching import predict_outputs

        if len(frame) == 0:
            return Predicted(np.array([], dtype=object), np.zeros((0, len(labels)), np.float32), np.zeros(0, int))
        probs, emb = predict_outputs(model, self.split(frame, processor, max_length=max_length), batch_size, device,
                                     desc, embeddings)
        return Predicted(np.array(labels, dtype=object)[probs.argmax(axis=1)], probs, np.arange(len(frame)), emb)

    def unit_truth(self, frame: pd.DataFrame, predicted: Predicted) -> np.ndarray:
        return self.truth(frame)

    def scores(self, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
        return label_scores(y_true, y_pred, labels)

    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict[str, Any]:
        """label + prob_<class> per row."""
        cols: dict[str, Any] = {"label": list(predicted.rows)}
        for i, name in enumerate(labels):
            cols[f"prob_{name}"] = predicted.unit_probs[:, i]
        return cols

    def answers(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> list[dict]:
        """label, its probability as score, and every class's probability (what `tuneline predict` writes)."""
        return [{"label": str(label), "score": float(probs.max()),
                 "probabilities": {name: float(p) for name, p in zip(labels, probs)}}
                for label, probs in zip(predicted.rows, predicted.unit_probs)]

    def profile(self, predicted: Predicted, frame: pd.DataFrame, labels: list[str], processor: Any) -> pd.DataFrame:
        gold = frame[LABEL].astype(str) if LABEL in frame.columns else None
        confidence = predicted.unit_probs.max(axis=1) if len(frame) else []
        return profile_tail(self.describe(frame, processor), gold, list(predicted.rows), confidence,
                            predicted.embeddings)

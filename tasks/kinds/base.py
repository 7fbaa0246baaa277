"""The seam between the shared pipeline and what differs per task kind.

Stages, flows, the gate, the registry, predict and monitoring hold a `Kind` and call it; none of them asks which kind
it is. A kind owns: reading a source into canonical rows, its row rules, how rows group for splitting, encoding rows
into model inputs, the model class and head, the split the engine trains on, predictions as label names, metrics in
one shared shape (accuracy, macro_f1, weighted_f1, per_class), its baseline, prediction output, drift descriptors.

Canonical rows: `row` (1-based source row), `origin` (source or batch id) and the kind's `columns`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

ROW = "row"  # 1-based data row number in the source file, for messages and the quarantine file
ORIGIN = "origin"  # "source" (the configured dataset) or the id of an ingested batch in the training pool
SOURCE_ORIGIN = "source"
LABEL = "label"
PRED, CONFIDENCE = "predicted_label", "confidence"  # profile columns every kind fills (drift)
EMB_PREFIX = "emb_"


@dataclass
class Predicted:
    """A model's predictions on canonical rows.

    rows: one entry per input row, as label names (a name per row, or a list of tag names per row for tokens).
    unit_probs: class probabilities of the flat units the confusion matrix and calibration read (rows, or words
    for tokens; `Kind.unit_truth` gives their gold labels). embeddings: per row, when asked for.
    """
    rows: np.ndarray
    unit_probs: np.ndarray
    unit_rows: np.ndarray  # which input row each unit belongs to
    embeddings: Optional[np.ndarray] = None
    unit_words: Optional[np.ndarray] = None  # token classification: which word of its row each unit is


class Kind:
    name: str                       # task.kind, and the transformers pipeline task
    columns: tuple[str, ...]        # canonical data columns besides row/origin
    label_column: str = LABEL       # the canonical column that holds the labels (absent in an unlabelled batch)
    min_classes: int = 2            # a training set needs at least this many classes (class_values)

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        """The configured source (data.path, or the kind's embedded default) as canonical rows with row numbers."""
        raise NotImplementedError

    def read_file(self, path: Path, cfg) -> pd.DataFrame:
        """A batch file with the user's columns, as canonical rows (no topic filter)."""
        raise NotImplementedError

    def source_label(self, cfg) -> str:
        return str(cfg.path)

    def required_columns(self, cfg, labelled: bool) -> list[tuple[str, str, str]]:
        """(canonical column, params key, configured name) that must be present."""
        raise NotImplementedError

    def is_labelled(self, df: pd.DataFrame) -> bool:
        return self.label_column in df.columns and df[self.label_column].notna().any()

    def row_rules(self, df: pd.DataFrame, data_cfg, cfg, allowed: Optional[set], labelled: bool, mark) -> dict:
        """Mark rows that break a kind rule (first rule wins); returns report extras (counts of flags)."""
        raise NotImplementedError

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        """Accepted rows as later stages read them (stripped, converted)."""
        return accepted

    def class_values(self, df: pd.DataFrame) -> pd.Series:
        """One value per class occurrence, for class counts and the class rules (labels; entity types)."""
        return df[LABEL].astype(str)

    def display(self, df: pd.DataFrame) -> pd.DataFrame:
        """The quarantine file's data columns (readable in a spreadsheet)."""
        raise NotImplementedError

    def profile_report(self, accepted: pd.DataFrame) -> dict:
        return {}

    # --- preprocess --------------------------------------------------------------------------------------------
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        """Rows with equal keys are near-duplicates: they land in one split (and leakage is checked on the key)."""
        raise NotImplementedError

    def strata(self, df: pd.DataFrame) -> pd.Series:
        """A label per row to stratify splits and caps on."""
        return df[LABEL].astype(str)

    def label_set(self, df: pd.DataFrame) -> list[str]:
        return sorted(df[LABEL].astype(str).unique().tolist())

    def augment(self, train: pd.DataFrame, cfg, seed: int) -> pd.DataFrame:
        """Extra training rows made at preprocess time (the `augmented` column marks them)."""
        return train.assign(augmented=False)

    def encode(self, part: pd.DataFrame, model_name: str, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        """Model-ready columns added to a split's rows, and a short profile of them for the report."""
        raise NotImplementedError

    # --- model -------------------------------------------------------------------------------------------------
    auto_class: str = ""            # the transformers AutoModelFor... class name
    peft_task: str = ""             # PEFT TaskType name for LoRA

    def load_processor(self, path: str):
        raise NotImplementedError

    def split(self, frame: pd.DataFrame, processor, train_cfg=None):
        """The engine's view of a processed split (see tasks/engine/batching.Split)."""
        raise NotImplementedError

    default_model_name: str = "sentence-transformers/all-MiniLM-L6-v2"  # what `train.model: default` is
    encoded_columns: tuple[str, ...] = ()  # model-ready columns a processor made (dropped to re-encode)

    def saved_processor(self, processor, train: pd.DataFrame):
        """The processor saved beside the trained model (the image kind fixes its size to the training crop)."""
        return processor

    def read_split(self, path: Path) -> pd.DataFrame:
        return pd.read_parquet(path)

    def raw(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Processed rows without what one model's processor made, for scoring another model on them."""
        return frame.drop(columns=[c for c in self.encoded_columns if c in frame.columns])

    def validator(self, frame: pd.DataFrame, processor, labels: list[str]):
        """What the training loop calls after each epoch: the kind's own scores on the validation split."""
        truth = self.truth(frame)

        def validate(model, batch_size: int, device) -> dict:
            predicted = self.predict(model, processor, frame, labels, batch_size, device, desc="validate")
            s = self.scores(truth, predicted.rows, labels)
            return {"val_macro_f1": s["macro_f1"], "val_accuracy": s["accuracy"]}

        return validate

    # --- evaluation --------------------------------------------------------------------------------------------
    def truth(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row, the gold label names (a name, or a list of tags)."""
        return frame[LABEL].astype(str).to_numpy()

    def predict(self, model, processor, frame: pd.DataFrame, labels: list[str], batch_size: int, device,
                embeddings: bool = False, desc: str = "predict", max_length: Optional[int] = None) -> Predicted:
        raise NotImplementedError

    def unit_truth(self, frame: pd.DataFrame, predicted: Predicted) -> np.ndarray:
        """Gold label names aligned with predicted.unit_probs (for the confusion matrix and calibration)."""
        return self.truth(frame)

    def scores(self, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
        """accuracy, macro_f1, weighted_f1, per_class {name: precision, recall, f1-score, support}, + extras."""
        raise NotImplementedError

    def class_names(self, labels: list[str]) -> list[str]:
        """The classes metrics are reported for (labels; entity types for BIO tags)."""
        return labels

    baseline_name: str = "baseline"

    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, labels: list[str], cfg, seed: int,
                 base_model: str) -> np.ndarray:
        """Per test row, the baseline's predicted label names."""
        raise NotImplementedError

    # --- serving and monitoring --------------------------------------------------------------------------------
    def read_predict_input(self, path: Path, column: Optional[str]) -> pd.DataFrame:
        raise NotImplementedError

    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict[str, Any]:
        """The columns `tuneline predict` adds to the input rows."""
        raise NotImplementedError

    def profile(self, predicted: Predicted, frame: pd.DataFrame, labels: list[str], processor) -> pd.DataFrame:
        """Drift profile rows: [text], descriptors, predicted_label, confidence, [label], emb_*."""
        raise NotImplementedError


def rename_to_canonical(df: pd.DataFrame, renames: dict[str, str], also: tuple[str, ...] = ()) -> pd.DataFrame:
    """The user's configured columns renamed to canonical names; a user column already called by a canonical name
    (or `row`, or a column the kind adds later: `also`) that is not the configured one would collide, so it is kept
    as `<name>_original`."""
    reserved = {*renames.values(), ROW, *also}
    clashes = {c: f"{c}_original" for c in reserved if c in df.columns and c not in renames}
    return df.rename(columns=clashes).rename(columns={k: v for k, v in renames.items() if k in df.columns})


def embedding_frame(emb: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(emb, columns=[f"{EMB_PREFIX}{i}" for i in range(emb.shape[1])])


def read_input_table(path: Path, columns: list[str], what: str) -> tuple[pd.DataFrame, str]:
    """A prediction input table (CSV/Parquet/JSONL) and the first of `columns` it has; an empty file is an empty
    table; when none is there, the message names them and the columns present."""
    from tasks.files.tables import DataFileError, read_table

    df = pd.DataFrame() if path.exists() and path.stat().st_size == 0 else read_table(path)
    found = next((c for c in columns if c in df.columns), columns[0])
    if len(df.columns) and found not in df.columns:
        raise DataFileError(f"{path}: {what} column {' or '.join(map(repr, columns))} is missing; columns present: "
                            f"{', '.join(map(str, df.columns))} (use --column)")
    return df, found


def label_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """One label per row (text, image): accuracy, macro/weighted F1 over every label, per-class report."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)),
        "per_class": {name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
                      for name in labels},
    }


def probability_columns(predicted: Predicted, labels: list[str]) -> dict[str, Any]:
    """label + prob_<class> per row (text, image)."""
    cols: dict[str, Any] = {"label": list(predicted.rows)}
    for i, name in enumerate(labels):
        cols[f"prob_{name}"] = predicted.unit_probs[:, i]
    return cols

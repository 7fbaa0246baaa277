"""Drift of a new batch against the production model's reference profile, measured with Evidently (0.7 API).

Checked columns: the text itself (Evidently's TF-IDF domain classifier), the text descriptors, the model's
predicted label and confidence, the model's own embeddings (a domain classifier on them), and, when both sides are
labelled, the label distribution. Evidently's verdicts are read into typed records here, once; the rest of
tuneline never touches the snapshot's layout. Live metrics on a labelled batch come from scikit-learn.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.evaluate import scores
from tasks.prepare import LABEL, TEXT
from tasks.profile import CONFIDENCE, DESCRIPTORS, EMB_PREFIX, PRED, embedding_columns

EMBEDDINGS = "model_embeddings"
EMBEDDING_AUC_THRESHOLD = 0.55  # Evidently's default for its embedding domain classifier (ROC AUC)
KINDS = {TEXT: "text", PRED: "prediction", CONFIDENCE: "prediction", LABEL: "label",
         **{d: "descriptor" for d in DESCRIPTORS}, EMBEDDINGS: "embeddings"}


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str          # text | descriptor | prediction | embeddings | label
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftSummary:
    reference_rows: int
    current_rows: int
    columns: list[ColumnDrift] = field(default_factory=list)
    live: Optional[dict] = None  # macro_f1, accuracy, rows: the production model on a labelled batch

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "drifted_columns": self.drifted, "drift_share": self.drift_share}


def _definition(frame: pd.DataFrame, labelled: bool):
    from evidently import DataDefinition

    emb = embedding_columns(frame)
    return DataDefinition(text_columns=[TEXT], numerical_columns=[CONFIDENCE, *DESCRIPTORS, *emb],
                          categorical_columns=[PRED] + ([LABEL] if labelled else []), embeddings={EMBEDDINGS: emb})


def _read(snapshot: dict) -> list[ColumnDrift]:
    """Per-column verdicts: ValueDrift's own test (FAIL = drift); the embedding classifier's AUC vs its threshold."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in snapshot["tests"]
              if t.get("metric_config")}
    out = []
    for m in snapshot["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith(":ValueDrift"):
            out.append(ColumnDrift(cfg["column"], KINDS.get(cfg["column"], "other"), cfg["method"], float(m["value"]),
                                   float(cfg["threshold"]), failed.get(m["id"], False)))
        elif cfg["type"].endswith(":EmbeddingsDrift"):
            threshold = float(cfg["drift_method"]["threshold"])
            out.append(ColumnDrift(EMBEDDINGS, "embeddings", "domain classifier ROC AUC", float(m["value"]),
                                   threshold, float(m["value"]) > threshold))
    return out


def project_embeddings(reference: pd.DataFrame, current: pd.DataFrame,
                       components: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both profiles with their embeddings replaced by the reference's top principal components.

    Evidently's cost grows with the column count (384 embedding columns: ~19 s per check on 2 cores); the domain
    classifier separates the batches as well on the leading components, where topic shifts show first.
    """
    from sklearn.decomposition import PCA

    cols = embedding_columns(reference)
    n = min(components, len(cols), len(reference))
    pca = PCA(n_components=n, random_state=0).fit(reference[cols].to_numpy())
    names = [f"{EMB_PREFIX}pc{i}" for i in range(n)]

    def project(frame: pd.DataFrame) -> pd.DataFrame:
        pcs = pd.DataFrame(pca.transform(frame[cols].to_numpy()), columns=names, index=frame.index)
        return pd.concat([frame.drop(columns=cols), pcs], axis=1)

    return project(reference), project(current)


def check(reference: pd.DataFrame, current: pd.DataFrame, html_path: Optional[Path] = None,
          embedding_components: int = 20, text_auc: float = 0.55) -> DriftSummary:
    """Evidently report of `current` (a batch profile) against `reference` (the production model's profile)."""
    from evidently import Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model as classifier_method
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    reference, current = project_embeddings(reference, current, embedding_components)
    labelled = LABEL in current.columns and LABEL in reference.columns and current[LABEL].notna().all()
    columns = [TEXT, *DESCRIPTORS, PRED, CONFIDENCE] + ([LABEL] if labelled else [])
    # Text: the domain classifier's ROC AUC against a fixed bar (Evidently's own choice above 1,000 rows); its
    # small-sample default bootstraps 1,000 random AUCs, 7 s of a 10 s report on 2 cores.
    metrics = [ValueDrift(column=TEXT, method="abs_text_content_drift", threshold=text_auc)]
    metrics += [ValueDrift(column=c) for c in columns if c != TEXT]
    metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDINGS,
                                   drift_method=classifier_method(threshold=EMBEDDING_AUC_THRESHOLD)))
    keep = columns + embedding_columns(reference)
    definition = _definition(reference, labelled)
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[keep], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[keep], data_definition=definition))
    if html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    summary = DriftSummary(len(reference), len(current), _read(json.loads(snapshot.json())))
    if labelled:
        names = sorted(set(reference[LABEL]) | set(current[LABEL]))
        index = {n: i for i, n in enumerate(names)}
        live = scores(current[LABEL].map(index).to_numpy(), current[PRED].map(index).to_numpy(), names)
        summary.live = {"macro_f1": live["macro_f1"], "accuracy": live["accuracy"], "rows": len(current)}
    return summary

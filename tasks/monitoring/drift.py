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

from tasks.kinds.base import CONFIDENCE, LABEL, PRED
from tasks.scoring import metric_name
from tasks.monitoring.profile import embedding_columns

TEXT = "text"  # a profile's text column, for the kinds that have one (text; tokens joined)
EMBEDDINGS = "model_embeddings"
EMBEDDING_AUC_THRESHOLD = 0.55  # Evidently's default for its embedding domain classifier (ROC AUC)
KINDS = {TEXT: "text", PRED: "prediction", CONFIDENCE: "prediction", LABEL: "label", EMBEDDINGS: "embeddings"}


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
    live: Optional[dict] = None  # the production model's scores on a labelled batch (its kind's), and rows

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "drifted_columns": self.drifted, "drift_share": self.drift_share}


def descriptor_columns(profile: pd.DataFrame) -> list[str]:
    """The kind's numeric descriptors in a profile: whatever is not text, label, prediction or embedding."""
    known = {TEXT, LABEL, PRED, CONFIDENCE}
    return [c for c in profile.columns if c not in known and not c.startswith("emb_")
            and pd.api.types.is_numeric_dtype(profile[c])]


def _definition(profile: pd.DataFrame, columns: list[str], text: bool):
    """Numbers (descriptors, confidence, a regression's score and target) as numerical, labels as categorical."""
    from evidently import DataDefinition

    checked = [c for c in columns if c != TEXT]
    numeric = [c for c in checked if pd.api.types.is_numeric_dtype(profile[c])]
    return DataDefinition(text_columns=[TEXT] if text else [], numerical_columns=numeric,
                          categorical_columns=[c for c in checked if c not in numeric])


def live_scores(live: dict) -> str:
    """"macro-F1 0.8012, accuracy 0.8123 (500 rows)": a live dict's scores in words."""
    scores = ", ".join(f"{metric_name(k)} {v:.4f}" for k, v in live.items() if k != "rows" and v is not None)
    return f"{scores} ({live['rows']} rows)"


def _read(snapshot: dict) -> list[ColumnDrift]:
    """Per-column verdicts from ValueDrift's own tests (FAIL = drift)."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in snapshot["tests"]
              if t.get("metric_config")}
    out = []
    for m in snapshot["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith(":ValueDrift"):
            out.append(ColumnDrift(cfg["column"], KINDS.get(cfg["column"], "descriptor"), cfg["method"], float(m["value"]),
                                   float(cfg["threshold"]), failed.get(m["id"], False)))
    return out


def preload() -> None:
    """Evidently's imports (about 5 s on a 2-core CPU): `check` pays them otherwise."""
    from evidently import Dataset, Report  # noqa: F401
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model  # noqa: F401
    from evidently.metrics import ValueDrift  # noqa: F401


def check(reference: pd.DataFrame, current: pd.DataFrame, html_path: Optional[Path] = None,
          text_auc: float = 0.55, live: Optional[dict] = None) -> DriftSummary:
    """Evidently report of `current` (a batch profile) against `reference` (the production model's profile).

    live: the production model's scores on a labelled batch as its kind measures them; when not given, they are
    read from the profiles' label and predicted-label columns."""
    from evidently import Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model as classifier_method
    from evidently.metrics import ValueDrift

    labelled = LABEL in current.columns and LABEL in reference.columns and current[LABEL].notna().all()
    text = TEXT in reference.columns and TEXT in current.columns
    descriptors = descriptor_columns(reference)
    confidence = [CONFIDENCE] if CONFIDENCE in reference.columns else []  # a regression's score has none
    columns = ([TEXT] if text else []) + [*descriptors, PRED, *confidence] + ([LABEL] if labelled else [])
    # Text: the domain classifier's ROC AUC against a fixed bar (Evidently's own choice above 1,000 rows); its
    # small-sample default bootstraps 1,000 random AUCs, 7 s of a 10 s report on 2 cores.
    metrics = [ValueDrift(column=TEXT, method="abs_text_content_drift", threshold=text_auc)] if text else []
    metrics += [ValueDrift(column=c) for c in columns if c != TEXT]
    definition = _definition(reference, columns, text)
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition))
    if html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    # Embeddings: Evidently's domain-classifier method called directly. Its EmbeddingsDrift metric also fits a t-SNE
    # for the report's picture (21 of 23 s on 10k vs 10k rows, 2 cores); the score comes from the classifier alone.
    emb = embedding_columns(reference)
    score, drifted, _ = classifier_method(threshold=EMBEDDING_AUC_THRESHOLD)(current[emb], reference[emb])
    columns_drift = _read(json.loads(snapshot.json())) + [
        ColumnDrift(EMBEDDINGS, "embeddings", "domain classifier ROC AUC", float(score), EMBEDDING_AUC_THRESHOLD,
                    bool(drifted))]
    summary = DriftSummary(len(reference), len(current), columns_drift)
    if live is None and labelled and not pd.api.types.is_numeric_dtype(current[PRED]):
        from sklearn.metrics import accuracy_score, f1_score

        names = sorted(set(reference[LABEL]) | set(current[LABEL]) | set(current[PRED]))
        live = {"macro_f1": float(f1_score(current[LABEL], current[PRED], labels=names, average="macro",
                                           zero_division=0)),
                "accuracy": float(accuracy_score(current[LABEL], current[PRED]))}
    if live is not None:
        summary.live = {**{k: v for k, v in live.items() if isinstance(v, (int, float)) and k != "rows"},
                        "rows": len(current)}
    if html_path is not None:  # the verdict first, Evidently's details below it
        put_header(Path(html_path), summary_html(summary))
    return summary


DECISION_SLOT = "<!--tuneline:decision-->"
HEADER_STYLE = ("font-family:system-ui,sans-serif;margin:16px;padding:16px 24px;border:2px solid #444;"
                "border-radius:8px;background:#fafafa")


def summary_html(summary: DriftSummary) -> str:
    """The page's first block: how many columns drifted, the share, a slot for the decision, the column table."""
    from html import escape

    drift_mark = '<b style="color:#b00">drift</b>'
    rows = "".join(
        f"<tr><td>{escape(c.column)}</td><td>{escape(c.kind)}</td><td>{escape(c.method)}</td><td>{c.score:.4g}</td>"
        f"<td>{c.threshold:.4g}</td><td>{drift_mark if c.drifted else 'no'}</td></tr>" for c in summary.columns)
    live = f"<p>Production model on this batch: {live_scores(summary.live)}</p>" if summary.live else ""
    head = "".join(f"<th align=left>{h}</th>" for h in ("column", "kind", "method", "score", "threshold", "drift"))
    return (f'<div id="tuneline-summary" style="{HEADER_STYLE}"><h1 style="margin-top:0">Drift: '
            f"{len(summary.drifted)} of {len(summary.columns)} checked columns drifted (share "
            f"{summary.drift_share:.2f})</h1>{DECISION_SLOT}{live}<table cellpadding=4><tr>{head}</tr>{rows}</table>"
            f"<p>{summary.current_rows} batch rows against {summary.reference_rows} reference rows; Evidently's "
            "report follows.</p></div>")


def put_header(html_path: Path, block: str) -> None:
    page = html_path.read_text(encoding="utf-8")
    at = page.find("<body>")
    at = at + len("<body>") if at >= 0 else 0
    html_path.write_text(page[:at] + block + page[at:], encoding="utf-8")


def add_decision(html_path: Path, retrain: bool, reasons: list[str]) -> None:
    """Fill the report's decision slot: the answer to "do I retrain?", with its reasons."""
    from html import escape

    verdict = "RETRAIN" if retrain else "no action"
    block = (f'<h2 style="color:{"#b00" if retrain else "#070"}">Decision: {verdict}</h2><ul>'
             + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>")
    page = html_path.read_text(encoding="utf-8")
    html_path.write_text(page.replace(DECISION_SLOT, block, 1), encoding="utf-8")

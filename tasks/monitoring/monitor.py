"""Checking a stored batch: its drift against the production model's reference profile (Evidently, drift.py), the
retraining decision (decision.py), and the reports (HTML + JSON) beside it.

Plain functions; tasks/intake.py takes files in and flows/monitoring.py wires them as Prefect tasks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.monitoring import drift
from tasks.monitoring import profile
from tasks.monitoring.decision import Decision, decide
from tasks.monitoring.batches import BatchInfo, BatchStore
from tasks.config import Params
from tasks.kinds import get_kind
from tasks.paths import ProjectPaths
from tasks.registry.store import REFERENCE_FILE, Registry
from tasks.files.tables import write_text

@dataclass
class BatchOutcome:
    file: str
    batch: Optional[BatchInfo] = None
    rejected: Optional[str] = None  # why the batch was refused (then nothing else was done)
    summary: Optional[drift.DriftSummary] = None
    decision: Optional[Decision] = None
    report_html: Optional[str] = None
    report_json: Optional[str] = None
    failed: bool = False  # reading or checking it crashed (the drop file went to failed/)


def production_reference(registry: Registry, metric: str = "macro_f1") -> tuple[pd.DataFrame, Optional[float]]:
    """The production model's reference profile and its test score on `metric` (from its registry record)."""
    version = registry.production_version()
    if version is None:
        raise FileNotFoundError("no production model yet: run the training flow first (tuneline run)")
    path = registry.production / REFERENCE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: production v{version} has no reference profile; retrain to create one")
    record = next((r for r in registry.records() if r["version"] == version), {})
    return pd.read_parquet(path), record.get("metrics", {}).get(metric)


def preload() -> None:
    """Import what a drift check needs (Evidently alone takes about 5 s on a 2-core CPU), e.g. while a server boots."""
    from tasks import inference  # noqa: F401

    drift.preload()


def check_batch(params: Params, store: BatchStore, registry: Registry, batch: BatchInfo,
                reports_dir: Path) -> BatchOutcome:
    """Drift of one stored batch against production, the decision, and its reports (HTML + JSON)."""
    from tasks.inference import Predictor

    headline = get_kind(params.task.kind).headline
    reference, production_score = production_reference(registry, headline)
    rows = profile.sample(store.rows(batch.id), params.monitor.max_rows, params.preprocess.seed).reset_index(drop=True)
    predictor = Predictor(registry.production, params.preprocess.max_length, params.evaluate.batch_size,
                          precision=params.inference.precision)
    current, live = predictor.profile_and_live(rows if batch.labelled else rows.drop(
        columns=[predictor.kind.label_column], errors="ignore"))
    out = reports_dir / batch.id
    summary = drift.check(reference, current, out / "drift.html", params.monitor.text_drift_auc, live=live)
    pending = sum(b.labelled_rows for b in store.pending_labelled(params.data.batches, params.task.kind))
    decision = decide(summary, params.monitor, production_score, pending, headline)
    drift.add_decision(out / "drift.html", decision.retrain, decision.reasons)
    payload = {"batch": batch.__dict__, "production_version": registry.production_version(),
               "summary": summary.to_dict(), "decision": decision.__dict__}
    write_text(json.dumps(payload, indent=2, default=str) + "\n", out / "drift.json")
    return BatchOutcome(batch.source, batch, summary=summary, decision=decision, report_html=str(out / "drift.html"),
                        report_json=str(out / "drift.json"))


def stored_unchecked(store: BatchStore, reports_dir: Path, file: Path) -> Optional[BatchInfo]:
    """The batch this file was stored as, if no drift check finished for it (a run stopped between the two steps,
    or the file went through `tuneline ingest` first): it is checked now instead of refused as a duplicate."""
    batch = store.find(file)
    return batch if batch is not None and not (reports_dir / batch.id / "drift.json").exists() else None


def unchecked_batches(paths: ProjectPaths) -> list[BatchInfo]:
    """Stored batches with no finished drift check: ingested with `tuneline ingest`, or a run stopped before it."""
    return [b for b in BatchStore(paths.batches).batches() if not (paths.monitoring_reports / b.id / "drift.json").exists()]


def process_stored(params: Params, paths: ProjectPaths, batch: BatchInfo) -> BatchOutcome:
    """Drift check and decision for a batch already stored (it was validated when it was ingested)."""
    return check_batch(params, BatchStore(paths.batches), Registry(paths.registry, paths.production), batch,
                       paths.monitoring_reports)















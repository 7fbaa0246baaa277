"""Monitoring: take new batches (a file, or every file in a drop folder), validate and store them, check drift
against the production model's reference profile, and decide whether to retrain, with reasons and figures.

Plain functions; flows/monitoring.py wires them as Prefect tasks. State-changing runs (monitoring, retraining) hold
one project lock, so a second run waits `monitor.lock_timeout_s` and then exits with a clear message.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.monitoring import drift
from tasks.monitoring import profile
from tasks.monitoring.batches import BatchInfo, BatchRejected, BatchStore
from tasks.config import MonitorConfig, Params
from tasks.paths import ProjectPaths
from tasks.promote import REFERENCE_FILE
from tasks.registry.store import Registry
from tasks.files.tables import SUFFIX_FORMATS, write_text

@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class BatchOutcome:
    file: str
    batch: Optional[BatchInfo] = None
    rejected: Optional[str] = None  # why the batch was refused (then nothing else was done)
    summary: Optional[drift.DriftSummary] = None
    decision: Optional[Decision] = None
    report_html: Optional[str] = None
    report_json: Optional[str] = None


def decide(summary: drift.DriftSummary, cfg: MonitorConfig, production_f1: Optional[float],
           pending_labelled_rows: int) -> Decision:
    """Retrain on drift, on a live-metric drop, or when enough labelled rows wait; never without labelled data."""
    reasons, wanted = [], False
    drifted = ", ".join(summary.drifted) or "none"
    if summary.drift_share >= cfg.drift_share:
        wanted = True
        reasons.append(f"drift share {summary.drift_share:.2f} >= monitor.drift_share {cfg.drift_share} "
                       f"(drifted: {drifted})")
    else:
        reasons.append(f"drift share {summary.drift_share:.2f} < monitor.drift_share {cfg.drift_share} "
                       f"(drifted: {drifted})")
    if summary.live is not None and production_f1 is not None:
        drop = production_f1 - summary.live["macro_f1"]
        hit = drop >= cfg.max_f1_drop
        wanted |= hit
        reasons.append(f"live macro-F1 {summary.live['macro_f1']:.4f} vs production test {production_f1:.4f} "
                       f"(drop {drop:+.4f} {'>=' if hit else '<'} monitor.max_f1_drop {cfg.max_f1_drop})")
    if pending_labelled_rows >= cfg.min_new_labelled_rows:
        wanted = True
        reasons.append(f"{pending_labelled_rows} labelled rows wait outside the training pool "
                       f"(>= monitor.min_new_labelled_rows {cfg.min_new_labelled_rows})")
    if wanted and pending_labelled_rows == 0:
        reasons.append("no labelled batch waits outside the training pool: label new data to retrain on")
        wanted = False
    return Decision(wanted, reasons)


def production_reference(registry: Registry) -> tuple[pd.DataFrame, Optional[float]]:
    """The production model's reference profile and its test macro-F1 (from its registry record)."""
    version = registry.production_version()
    if version is None:
        raise FileNotFoundError("no production model yet: run the training flow first (tuneline run)")
    path = registry.production / REFERENCE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: production v{version} has no reference profile; retrain to create one")
    record = next((r for r in registry.records() if r["version"] == version), {})
    return pd.read_parquet(path), record.get("metrics", {}).get("macro_f1")


def preload() -> None:
    """Import what a drift check needs (Evidently alone takes about 5 s on a 2-core CPU), e.g. while a server boots."""
    from tasks import predict  # noqa: F401

    drift.preload()


def check_batch(params: Params, store: BatchStore, registry: Registry, batch: BatchInfo,
                reports_dir: Path) -> BatchOutcome:
    """Drift of one stored batch against production, the decision, and its reports (HTML + JSON)."""
    from tasks.predict import Predictor

    reference, production_f1 = production_reference(registry)
    rows = profile.sample(store.rows(batch.id), params.monitor.max_rows, params.preprocess.seed).reset_index(drop=True)
    predictor = Predictor(registry.production, params.preprocess.max_length, params.evaluate.batch_size)
    current, live = predictor.profile_and_live(rows if batch.labelled else rows.drop(
        columns=[predictor.kind.label_column], errors="ignore"))
    out = reports_dir / batch.id
    summary = drift.check(reference, current, out / "drift.html", params.monitor.text_drift_auc, live=live)
    pending = sum(b.labelled_rows for b in store.pending_labelled(params.data.batches, params.task.kind))
    decision = decide(summary, params.monitor, production_f1, pending)
    drift.add_decision(out / "drift.html", decision.retrain, decision.reasons)
    payload = {"batch": batch.__dict__, "production_version": registry.production_version(),
               "summary": summary.to_dict(), "decision": decision.__dict__}
    write_text(json.dumps(payload, indent=2, default=str) + "\n", out / "drift.json")
    return BatchOutcome(batch.source, batch, None, summary, decision, str(out / "drift.html"), str(out / "drift.json"))


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


def ingest_file(params: Params, store: BatchStore, registry: Registry, file: Path) -> BatchOutcome:
    """Validate and store a batch file; a refused file is reported (and nothing is stored)."""
    try:
        batch = store.ingest(file, params.data, params.validate_, training_labels(registry, params),
                             kind=params.task.kind)
    except (BatchRejected, ValueError) as exc:  # ValueError: DataFileError / ValidationFailed, each naming the file
        return BatchOutcome(str(file), rejected=str(exc))
    return BatchOutcome(str(file), batch)


def training_labels(registry: Registry, params: Params) -> Optional[list[str]]:
    """The production model's label set (a batch may only use these labels)."""
    if registry.production_version() is None:
        return params.validate_.labels
    config = json.loads((registry.production / "config.json").read_text(encoding="utf-8"))
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def drop_files(drop_dir: Path) -> list[Path]:
    if not drop_dir.exists():
        return []
    return sorted(p for p in drop_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIX_FORMATS)


def file_away(file: Path, outcome: BatchOutcome) -> None:
    """Move a processed drop file to done/ or rejected/ (with the reason beside it), so it is not taken twice."""
    target = file.parent / ("rejected" if outcome.rejected else "done")
    target.mkdir(exist_ok=True)
    shutil.move(str(file), target / file.name)
    if outcome.rejected:
        write_text(outcome.rejected + "\n", target / f"{file.name}.reason.txt")


def outcome_markdown(outcomes: list[BatchOutcome]) -> str:
    if not outcomes:
        return "# Monitoring\n\nNo new batch in the drop folder."
    lines = ["# Monitoring"]
    for o in outcomes:
        if o.rejected:
            lines += ["", f"## {Path(o.file).name}: REJECTED", "", o.rejected]
            continue
        verdict = "RETRAIN" if o.decision.retrain else "no action"
        lines += ["", f"## Batch {o.batch.id} ({o.batch.rows_accepted} rows, "
                      f"{'labelled' if o.batch.labelled else 'unlabelled'}): {verdict}", "",
                  *([f"Note: {o.batch.note}", ""] if o.batch.note else []),
                  *[f"- {r}" for r in o.decision.reasons], "",
                  "| column | kind | method | score | threshold | drift |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.column} | {c.kind} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | "
                  f"{'**yes**' if c.drifted else 'no'} |" for c in o.summary.columns]
        if o.summary.live:
            lines += ["", f"Live on this batch: macro-F1 {o.summary.live['macro_f1']:.4f}, "
                          f"accuracy {o.summary.live['accuracy']:.4f} ({o.summary.live['rows']} rows)"]
        lines += ["", f"Report: `{o.report_html}`; summary: `{o.report_json}`"]
    return "\n".join(lines)


def files_to_process(paths: ProjectPaths, drop_dir: Optional[str | Path],
                     files: Optional[list[str | Path]]) -> tuple[list[Path], bool]:
    """Given files, or every batch file in the drop folder; the flag says whether they are drop files."""
    if files:
        return [Path(f) for f in files], False
    return drop_files(Path(drop_dir) if drop_dir else paths.incoming), True


def process_file(params: Params, paths: ProjectPaths, file: Path, from_drop: bool = False) -> BatchOutcome:
    """One batch file end to end: validate and store (versioned with DVC), drift check, decision, reports."""
    from tasks.orchestration.pipeline import dvc_add_alongside

    store, registry = BatchStore(paths.batches), Registry(paths.registry, paths.production)
    production_reference(registry)  # fail before storing anything when there is nothing to compare with
    unchecked = stored_unchecked(store, paths.monitoring_reports, Path(file))
    outcome = BatchOutcome(str(file), unchecked) if unchecked else ingest_file(params, store, registry, Path(file))
    if outcome.batch is not None:
        # Versioned while the drift check runs (a no-op when the batch was stored before).
        with dvc_add_alongside(paths.batches.relative_to(paths.root), paths.root):
            outcome = check_batch(params, store, registry, outcome.batch, paths.monitoring_reports)
    if from_drop:
        file_away(Path(file), outcome)
    return outcome


def run_summary(outcomes: list[BatchOutcome]) -> dict:
    return {"accepted": [o.batch.id for o in outcomes if o.batch],
            "rejected": {Path(o.file).name: o.rejected for o in outcomes if o.rejected},
            "retrain": [o.batch.id for o in outcomes if o.decision and o.decision.retrain],
            "drift_share": {o.batch.id: round(o.summary.drift_share, 4) for o in outcomes if o.summary},
            "decisions": {o.batch.id: {"retrain": o.decision.retrain, "reasons": o.decision.reasons}
                          for o in outcomes if o.decision},
            "notes": {o.batch.id: o.batch.note for o in outcomes if o.batch and o.batch.note},
            "reports": [o.report_html for o in outcomes if o.report_html]}


def summary_lines(summary: dict) -> list[str]:
    """What `tuneline monitor` prints: one decision per batch, its reasons, and where the reports are."""
    lines = [f"rejected {name}: {why}" for name, why in summary["rejected"].items()]
    for batch_id in summary["accepted"]:
        d = summary["decisions"][batch_id]
        lines.append(f"batch {batch_id}: drift share {summary['drift_share'][batch_id]:.2f} -> "
                     f"decision: {'RETRAIN' if d['retrain'] else 'no action'}")
        if summary.get("notes", {}).get(batch_id):
            lines.append(f"  note: {summary['notes'][batch_id]}")
        lines += [f"  - {r}" for r in d["reasons"]]
    lines += [f"drift report: {r}" for r in summary["reports"]]
    return lines or ["no new batch to process"]

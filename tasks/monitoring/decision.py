"""The retraining decision for one checked batch: retrain on drift, on a live-metric drop, or when enough labelled
rows wait outside the training pool; never without labelled data. Every decision carries its figures as reasons."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tasks.config import MonitorConfig
from tasks.monitoring.drift import DriftSummary


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)


def decide(summary: DriftSummary, cfg: MonitorConfig, production_f1: Optional[float],
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

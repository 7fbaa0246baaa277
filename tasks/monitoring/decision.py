"""The retraining decision for one checked batch: retrain on drift, on a live-metric drop, or when enough labelled
rows wait outside the training pool; never without labelled data. Every decision carries its figures as reasons."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tasks.config import MonitorConfig
from tasks.monitoring.drift import DriftSummary
from tasks.scoring import gain, higher_is_better, metric_name


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)


def decide(summary: DriftSummary, cfg: MonitorConfig, production_score: Optional[float],
           pending_labelled_rows: int, metric: str = "macro_f1") -> Decision:
    """Retrain on drift, on a live-metric drop, or when enough labelled rows wait; never without labelled data.
    `metric`: the kind's headline, compared in its direction (a live RMSE above production's test is the drop)."""
    reasons, wanted = [], False
    drifted = ", ".join(summary.drifted) or "none"
    if summary.drift_share >= cfg.drift_share:
        wanted = True
        reasons.append(f"drift share {summary.drift_share:.2f} >= monitor.drift_share {cfg.drift_share} "
                       f"(drifted: {drifted})")
    else:
        reasons.append(f"drift share {summary.drift_share:.2f} < monitor.drift_share {cfg.drift_share} "
                       f"(drifted: {drifted})")
    live = (summary.live or {}).get(metric)
    if live is not None and production_score is not None:
        drop = -gain(metric, live, production_score)
        limit, key = ((cfg.max_f1_drop, "max_f1_drop") if higher_is_better(metric) else
                      (cfg.max_error_rise, "max_error_rise"))
        hit = drop >= limit
        wanted |= hit
        worse = "drop" if higher_is_better(metric) else "rise"
        reasons.append(f"live {metric_name(metric)} {live:.4f} vs production test {production_score:.4f} "
                       f"({worse} {drop:+.4f} {'>=' if hit else '<'} monitor.{key} {limit})")
    if pending_labelled_rows >= cfg.min_new_labelled_rows:
        wanted = True
        reasons.append(f"{pending_labelled_rows} labelled rows wait outside the training pool "
                       f"(>= monitor.min_new_labelled_rows {cfg.min_new_labelled_rows})")
    if wanted and pending_labelled_rows == 0:
        reasons.append("no labelled batch waits outside the training pool: label new data to retrain on")
        wanted = False
    return Decision(wanted, reasons)

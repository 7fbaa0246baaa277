"""What a monitoring run reports: its outcomes as markdown (the Prefect artifact), as a small dict (the flow's
result) and as lines (`tuneline monitor`)."""
from __future__ import annotations

from pathlib import Path

from tasks.monitoring.drift import live_scores
from tasks.monitoring.monitor import BatchOutcome


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
            lines += ["", f"Live on this batch: {live_scores(o.summary.live)}"]
        lines += ["", f"Report: `{o.report_html}`; summary: `{o.report_json}`"]
    return "\n".join(lines)


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

"""Prefect flow `monitoring`: new batches from a drop folder (or given files) -> validate and store -> drift check
against production -> decision, as a markdown artifact; a retraining decision is announced as a Prefect event,
which the `retraining/nightly` deployment's trigger answers."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from flows.guard import check_run
from flows.locked import run_locked
from tasks.config import load_params
from tasks import intake
from tasks.monitoring import monitor, summary as monitoring_summary
from tasks.paths import ProjectPaths

DRIFT_EVENT = "tuneline.drift.detected"


def project_resource(root: str | Path) -> str:
    """The event's resource id: one per project directory, so a trigger answers its own project only."""
    import hashlib

    return f"tuneline.project.{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]}"


# A refused batch is a return value, not an exception, so a raise is a crash worth one retry; the retry checks the
# batch the failed attempt may already have stored instead of refusing it as a duplicate.
process_file = task(intake.process_file, name="process-batch", task_run_name="{file.name}", retries=1,
                    retry_delay_seconds=5)
check_stored = task(monitor.process_stored, name="check-stored-batch", task_run_name="{batch.id}", retries=1,
                    retry_delay_seconds=5)


@flow(name="monitoring", log_prints=True)
def monitoring(project_dir: str = ".", drop_dir: Optional[str] = None, files: Optional[list[str]] = None) -> dict:
    """Process `files`, or every file in `drop_dir` (default data/incoming); processed drop files move to done/ or
    rejected/ beside them."""
    check_run(project_dir=project_dir, drop_dir=drop_dir, files=files)
    paths = ProjectPaths(Path(project_dir).resolve())

    def batches() -> dict:
        params = load_params(paths.params)
        todo, from_drop = intake.files_to_process(paths, drop_dir, files)
        outcomes = [process_file(params, paths, f, from_drop) for f in todo]
        # Then every stored batch still without a drift verdict (e.g. it came in through `tuneline ingest`).
        outcomes += [check_stored(params, paths, b) for b in monitor.unchecked_batches(paths)]
        create_markdown_artifact(key="monitoring-decision", markdown=monitoring_summary.outcome_markdown(outcomes),
                                 description="Batches taken, drift per column, and the retraining decision")
        summary = monitoring_summary.run_summary(outcomes)
        if summary["retrain"]:
            emit_event(DRIFT_EVENT, resource={"prefect.resource.id": project_resource(paths.root)},
                       payload={"batches": summary["retrain"], "project_dir": str(paths.root)})
        get_run_logger().info("batches: %s", summary)
        return summary

    return run_locked(paths.root, "monitoring flow", batches)

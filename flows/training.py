"""Prefect flow `training`: the DVC stages, one Prefect task each, then the metrics as a markdown artifact, the gate
and (with a default DVC remote) a push."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.guard import check_run
from flows.locked import run_locked
from tasks import changes, params_file
from tasks.config import load_params
from tasks.metrics import metrics_markdown
from tasks.orchestration import pipeline, reporting, storage
from tasks.registry.promotion import decision_markdown


def _retry_unless_user_error(task, task_run, state) -> bool:
    try:
        state.result()
    except pipeline.StageFailed as exc:
        return not exc.user_error  # bad params/data fail the same way twice
    except Exception:
        return True
    return False


check_params = task(load_params, name="check-params")
apply_overrides = task(params_file.apply_overrides, name="apply-overrides")
promote = task(changes.promote, name="promote")
push = task(storage.push, name="dvc-push")  # after the gate only: the remote never sees a half-made promotion
# The stage's output lines go to the task run's log and its progress bars to a progress artifact (tasks/orchestration/
# reporting.py), so the UI shows what the stage is doing while it runs.
run_stage = task(reporting.reproduce_stage_reported, name="dvc-stage", task_run_name="{stage}", retries=1,
                 retry_delay_seconds=5, retry_condition_fn=_retry_unless_user_error)


@flow(name="training", log_prints=True)
def training(project_dir: str = ".", overrides: Optional[dict[str, Any]] = None, promote_model: bool = True) -> dict:
    """Reproduce prepare → validate → preprocess → train → evaluate → reference through DVC, then gate and promote.

    overrides: params.yaml keys to change first, e.g. {"train.epochs": 1}; they are written to params.yaml so
    `dvc repro`, `dvc params diff` and dvc.lock all see the same run. Holds the project lock throughout: a second
    run meanwhile ends at once saying who holds it (a normal outcome, so no retries).
    """
    check_run(project_dir=project_dir, overrides=overrides)
    root = Path(project_dir).resolve()
    return run_locked(root, "training flow", lambda: _stages_and_gate(root, overrides, promote_model))


def _stages_and_gate(root: Path, overrides: Optional[dict[str, Any]], promote_model: bool) -> dict:
    if overrides:
        apply_overrides(root / "params.yaml", overrides)
    check_params(root / "params.yaml")
    runs = [run_stage(stage, root) for stage in pipeline.STAGES]
    create_markdown_artifact(key="training-metrics", markdown=metrics_markdown(root / "reports/metrics.json"),
                             description="Test metrics of the candidate model and its kind's baseline")
    decision = promote(root) if promote_model else None
    if decision is not None:
        create_markdown_artifact(key="promotion-decision", markdown=decision_markdown(decision),
                                 description="Gate decision: candidate vs production")
        pushed = push(root)  # a no-op without a default DVC remote
        if pushed:
            get_run_logger().info(pushed)
    summary = pipeline.run_summary(runs, decision)
    get_run_logger().info("stages run: %s; skipped (unchanged): %s", summary["ran"] or "none",
                          summary["skipped"] or "none")
    return summary

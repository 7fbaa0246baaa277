"""Prefect flow `retraining`: the training pool takes the labelled batches waiting outside it, the DVC stages run
(the `training` flow, as a subflow), and the candidate is gated against production; nothing to add, nothing done."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.states import Completed
from prefect.artifacts import create_markdown_artifact

from flows.training import training
from tasks.monitoring import retrain
from tasks.orchestration.locking import ProjectBusy, run_lock
from tasks.config import load_params
from tasks.paths import ProjectPaths

make_plan = task(retrain.plan_for_project, name="retrain-plan")


@flow(name="retraining", log_prints=True)
def retraining(project_dir: str = ".", force: bool = False) -> dict:
    """force: retrain even when no new labelled batch waits (e.g. after changing params)."""
    paths = ProjectPaths(Path(project_dir).resolve())
    try:
        with run_lock(paths.root, load_params(paths.params).monitor.lock_timeout_s):
            plan = make_plan(paths, force)
            result = training(project_dir=str(paths.root), overrides=plan.overrides) if plan.needed else None
    except ProjectBusy as busy:  # a normal outcome for a scheduled run: nothing done, say why
        get_run_logger().warning(str(busy))
        return Completed(message=str(busy), data={"busy": str(busy), "retrained": False, "reasons": [str(busy)]})
    create_markdown_artifact(key="retraining-plan", markdown=retrain.plan_markdown(plan, result),
                             description="What joined the training pool, and the gate's decision")
    return retrain.run_summary(plan, result)

"""Prefect flow `retraining`: the training pool takes the labelled batches waiting outside it, the DVC stages run
(the `training` flow, as a subflow), and the candidate is gated against production; nothing to add, nothing done."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.guard import check_run
from flows.locked import run_locked
from flows.training import training
from tasks import params_file
from tasks.monitoring import retrain
from tasks.paths import ProjectPaths

make_plan = task(retrain.plan_for_project, name="retrain-plan")
apply_plan = task(params_file.apply_overrides, name="apply-plan")


@flow(name="retraining", log_prints=True)
def retraining(project_dir: str = ".", force: bool = False) -> dict:
    """force: retrain even when no new labelled batch waits (e.g. after changing params)."""
    check_run(project_dir=project_dir)
    paths = ProjectPaths(Path(project_dir).resolve())

    def plan_and_train() -> dict:
        plan = make_plan(paths, force)
        result = None
        if plan.needed:
            apply_plan(paths.params, plan.overrides)  # the new data version is a params change DVC tracks
            result = training(project_dir=str(paths.root))
        create_markdown_artifact(key="retraining-plan", markdown=retrain.plan_markdown(plan, result),
                                 description="What joined the training pool, and the gate's decision")
        return retrain.run_summary(plan, result)

    return run_locked(paths.root, "retraining flow", plan_and_train, retrained=False)

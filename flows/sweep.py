"""Prefect flow `sweep`: trials as DVC experiments (tasks/orchestration/sweep.py), the winner applied, then the
`training` flow (evaluate, gate, promotion) as a subflow, so the winner is gated like any other candidate."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.guard import check_run
from flows.locked import run_locked
from flows.training import training
from tasks.orchestration import sweep
from tasks.orchestration.reporting import StageReporter


def _run_trials(root: Path, grid: Optional[dict[str, list]]) -> sweep.SweepResult:
    # The reporter is made inside the task run, so the trials' DVC output lands in that task run's log.
    return sweep.run(root, sweep.project_config(root, grid), on_line=StageReporter("sweep").line)


run_trials = task(_run_trials, name="sweep-trials")
apply_winner = task(sweep.apply_winner, name="apply-winner")


@flow(name="sweep", log_prints=True)
def sweep_flow(project_dir: str = ".", grid: Optional[dict[str, list]] = None, promote_model: bool = True) -> dict:
    """Try params.yaml's `sweep.grid` (or `grid`, e.g. {"train.learning_rate": [1e-4, 3e-4]}) as DVC experiments,
    choose by validation macro-F1, then evaluate and gate the winner through the `training` flow.
    Holds the project lock: the winner is applied to the workspace."""
    check_run(project_dir=project_dir, grid=grid)
    root = Path(project_dir).resolve()

    def trials_then_training() -> dict:
        result = run_trials(root, grid)
        create_markdown_artifact(key="sweep-trials", markdown=sweep.markdown(result),
                                 description="Every trial's params and validation macro-F1; the winner")
        apply_winner(root, result.winner)
        return {"sweep": result, "training": training(project_dir=str(root), promote_model=promote_model)}

    return run_locked(root, "sweep flow", trials_then_training)

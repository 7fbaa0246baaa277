"""Deployments served by `tuneline serve` (or `python -m flows.deployments PROJECT_DIR [MONITOR_CRON RETRAIN_CRON]`).

training/default      manual: the DVC stages, gate and promotion
monitoring/scheduled  cron (default hourly): takes the drop folder's batches, checks drift, decides
retraining/nightly    cron (default 03:00) and on every drift event that monitoring emits for this project
sweep/default         manual: params.yaml's sweep.grid as DVC experiments, the winner evaluated and gated
"""
from __future__ import annotations

import sys
from pathlib import Path

from prefect import serve
from prefect.events import DeploymentEventTrigger

from flows.monitoring import DRIFT_EVENT, monitoring, project_resource
from flows.retraining import retraining
from flows.sweep import sweep_flow
from flows.training import training

MONITOR_CRON = "0 * * * *"
RETRAIN_CRON = "0 3 * * *"


def build(project_dir: str | Path, monitor_cron: str = MONITOR_CRON, retrain_cron: str = RETRAIN_CRON):
    project_dir = str(Path(project_dir).resolve())
    params = {"project_dir": project_dir}
    on_drift = DeploymentEventTrigger(name="retrain-on-drift", expect={DRIFT_EVENT},
                                      match={"prefect.resource.id": project_resource(project_dir)},
                                      parameters=params)
    return [
        training.to_deployment(name="default", parameters=params,
                               description="Manual training run: DVC stages prepare..reference, gate, promotion"),
        monitoring.to_deployment(name="scheduled", parameters=params, cron=monitor_cron,
                                 description="Drop-folder batches: validate, store, drift check, decision"),
        retraining.to_deployment(name="nightly", parameters=params, cron=retrain_cron, triggers=[on_drift],
                                 description="Pool the waiting labelled batches, retrain, gate; also on drift events"),
        sweep_flow.to_deployment(name="default", parameters=params,
                                 description="Trials as DVC experiments, chosen by validation macro-F1; the winner "
                                             "evaluated and gated"),
    ]


def main() -> None:
    args = sys.argv[1:]
    serve(*build(args[0] if args else ".", *args[1:3]))


if __name__ == "__main__":
    main()

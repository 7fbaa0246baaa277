"""Deployments served by `tuneline serve` (or `python -m flows.deployments PROJECT_DIR [MONITOR_CRON RETRAIN_CRON]`),
or registered for a work pool's workers by `tuneline deploy` (deploy_to_pool). With `serve`:

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


def specs(project_dir: str, monitor_cron: str = MONITOR_CRON, retrain_cron: str = RETRAIN_CRON) -> list[tuple]:
    """(flow, entrypoint, deployment name, options) for each deployment, as `serve` and a work pool both deploy them."""
    params = {"project_dir": project_dir}
    on_drift = DeploymentEventTrigger(name="retrain-on-drift", expect={DRIFT_EVENT},
                                      match={"prefect.resource.id": project_resource(project_dir)},
                                      parameters=params)
    return [
        (training, "flows/training.py:training", "default",
         dict(parameters=params, description="Manual training run: DVC stages prepare..reference, gate, promotion")),
        (monitoring, "flows/monitoring.py:monitoring", "scheduled",
         dict(parameters=params, cron=monitor_cron,
              description="Drop-folder batches: validate, store, drift check, decision")),
        (retraining, "flows/retraining.py:retraining", "nightly",
         dict(parameters=params, cron=retrain_cron, triggers=[on_drift],
              description="Pool the waiting labelled batches, retrain, gate; also on drift events")),
        (sweep_flow, "flows/sweep.py:sweep_flow", "default",
         dict(parameters=params,
              description="Trials as DVC experiments, chosen by validation macro-F1; the winner evaluated and gated")),
    ]


def build(project_dir: str | Path, monitor_cron: str = MONITOR_CRON, retrain_cron: str = RETRAIN_CRON):
    """Deployments for `prefect.serve` (one process on one machine: `tuneline serve`)."""
    return [flow.to_deployment(name=name, **options)
            for flow, _, name, options in specs(str(Path(project_dir).resolve()), monitor_cron, retrain_cron)]


def code_dir() -> Path:
    """The checkout that holds flows/ (the workers load the flows from it)."""
    return Path(__file__).resolve().parent.parent


def git_source(url: str):
    """A git URL for the workers to clone. Credentials in it (https://user:token@host/...) never reach the
    deployment: they go into a Prefect Secret block, which the deployment's pull step names, and the stored URL has
    none (the API, the UI and `prefect deployment inspect` show the URL only)."""
    import hashlib
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password and not (parts.username and parts.scheme in ("http", "https")):
        return url
    if parts.scheme != "https":
        from tasks.config import ConfigError

        raise ConfigError(f"--source: credentials are sent over https only; {parts.scheme}://{parts.hostname}... "
                          "would send them in the clear")
    from prefect.blocks.system import Secret
    from prefect.runner.storage import GitRepository

    clean = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path,
                        parts.query, parts.fragment))
    token = parts.password or parts.username
    name = f"tuneline-git-{hashlib.sha256(clean.encode()).hexdigest()[:12]}"
    Secret(value=token).save(name, overwrite=True)
    credentials = {"access_token": Secret.load(name)}
    if parts.password:
        credentials["username"] = parts.username
    return GitRepository(url=clean, credentials=credentials)


def deploy_to_pool(project_dir: str | Path, pool: str, name: str | None = None, source: str | None = None,
                   monitor_cron: str = MONITOR_CRON, retrain_cron: str = RETRAIN_CRON) -> list[str]:
    """Register the deployments on the server for a work pool's workers (on any machine that reaches the server).

    source: where workers load the flow code from: this checkout (default), or a git URL that each run clones.
    project_dir: the project's path on the worker machines. name: one deployment name for all four flows (default:
    the pool's name), so several projects or clones can share a pool.
    """
    from tasks.orchestration.prefect_objects import ensure_pool

    ensure_pool(pool)
    deployed = []
    code = git_source(source) if source else str(code_dir())
    for flow, entrypoint, default_name, options in specs(str(project_dir), monitor_cron, retrain_cron):
        remote = flow.from_source(source=code, entrypoint=entrypoint)
        remote.deploy(name=name or pool, work_pool_name=pool, print_next_steps=False, **options)
        deployed.append(f"{flow.name}/{name or pool}")
    return deployed


def main() -> None:
    args = sys.argv[1:]
    serve(*build(args[0] if args else ".", *args[1:3]))


if __name__ == "__main__":
    main()

"""The Prefect flow and deployment against a real server on 127.0.0.1, agreeing with `dvc repro` on one cache."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.orchestration import prefect_server as serving
from tasks.config import load_params
from tests.conftest import (all_flow_run_artifacts, created_flow_run_id, dvc, flow_run_artifacts, make_project,
                            ran_stages, sh, task_run_logs, tiny_params, wait_for_deployments)

pytestmark = pytest.mark.integration


def tuneline_run(project, env) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "tasks.cli", "run", "--project-dir", str(project), cwd=project, env=env)


def test_flow_run_leaves_dvc_clean_and_dvc_repro_leaves_flow_nothing(prefect_env, tmp_path, tiny_model_dir):
    a = make_project(tmp_path / "a", tiny_params(tiny_model_dir))
    first = tuneline_run(a, prefect_env)
    assert "stages run: prepare, validate, preprocess, train, evaluate, reference" in first.stdout
    assert "decision: candidate v1 PROMOTED; production is v1" in first.stdout
    assert (a / "models/production/config.json").exists() and (a / "models/registry.dvc").exists()
    assert dvc(a, "status", "--json").stdout.strip() in ("{}", "")  # the flow wrote dvc.lock and dvc-added the registry
    assert ran_stages(dvc(a, "repro").stdout) == []
    rerun = tuneline_run(a, prefect_env)  # nothing changed: no stage runs and no new model version appears
    assert "stages run: none" in rerun.stdout and "decision: unchanged; production is v1" in rerun.stdout

    b = make_project(tmp_path / "b", tiny_params(tiny_model_dir))
    assert len(ran_stages(dvc(b, "repro").stdout)) == 6
    again = tuneline_run(b, prefect_env)
    assert "stages run: none" in again.stdout
    assert dvc(b, "status", "--json").stdout.strip() in ("{}", "")


def test_deployment_run_completes_against_real_server(prefect_env, tmp_path, tiny_model_dir):
    # The project's owner lets runs started through the API choose the strategy (control.override_keys).
    allowed = {"override_keys": ["train.epochs", "train.strategy"]}
    project = make_project(tmp_path / "deployed", tiny_params(tiny_model_dir, control=allowed))
    # Progress bars on (the suite turns them off elsewhere): the UI's progress artifacts are made from them.
    env = {k: v for k, v in prefect_env.items() if k != "TQDM_DISABLE"}
    serve = serving.start_serving(project, tmp_path / "serve.log", env)
    try:
        wait_for_deployments(project, prefect_env, ["training/default"], serve, tmp_path / "serve.log")
        # The strategy travels as a deployment parameter (params.yaml overrides, type-checked before any work).
        run = sh(sys.executable, "-m", "prefect", "deployment", "run", "training/default", "--watch",
                 "--watch-timeout", "400", "--param", 'overrides={"train.strategy": "gradual"}',
                 cwd=project, env=prefect_env, check=False, timeout=450)
        log = (tmp_path / "serve.log").read_text()
        assert run.returncode == 0, run.stdout + run.stderr + log
        assert "Completed" in run.stdout
        assert (project / "reports/metrics.json").exists() and (project / "models/candidate/config.json").exists()
        assert dvc(project, "status", "--json").stdout.strip() in ("{}", "")
        assert load_params(project / "params.yaml").train.strategy == "gradual"
        assert "strategy: gradual" in (project / "dvc.lock").read_text()  # the run DVC recorded used it
        flow_run_id = created_flow_run_id(run.stdout)
        shown = flow_run_artifacts(prefect_env, flow_run_id)
        assert set(shown) == {"training-metrics", "promotion-decision"}
        assert shown["promotion-decision"].startswith("# Candidate v1: ")
        # What the UI shows of the stages while they run: their own lines in the task run's log, and progress.
        train_log = task_run_logs(prefect_env, flow_run_id, "train")
        assert any(m.startswith("train (gradual): best val macro-F1 ") for m in train_log), train_log
        assert any(m.startswith("train epoch 1/1: 100%") for m in train_log)
        progress = [a for a in all_flow_run_artifacts(prefect_env, flow_run_id) if a["type"] == "progress"]
        assert any("stage train" in a["description"] and float(a["data"]) == 100.0 for a in progress), progress
    finally:
        serving.terminate(serve)

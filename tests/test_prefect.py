"""The Prefect flow and deployment against a real server on 127.0.0.1, agreeing with `dvc repro` on one cache."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.orchestration import serving
from tasks.config import load_params
from tests.conftest import (created_flow_run_id, dvc, flow_run_artifacts, make_project, ran_stages, sh, tiny_params,
                            wait_for_deployments)

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
    project = make_project(tmp_path / "deployed", tiny_params(tiny_model_dir))
    serve = serving.start_serving(project, tmp_path / "serve.log", prefect_env)
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
        shown = flow_run_artifacts(prefect_env, created_flow_run_id(run.stdout))
        assert set(shown) == {"training-metrics", "promotion-decision"}
        assert shown["promotion-decision"].startswith("# Candidate v1: ")
    finally:
        serving.terminate(serve)

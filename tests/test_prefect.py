"""The Prefect flow and deployment against a real server on 127.0.0.1, agreeing with `dvc repro` on one cache."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tasks import serving
from tasks.config import load_params
from tests.conftest import dvc, make_project, ran_stages, sh, tiny_params, tool_env

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    """A real Prefect server with its own PREFECT_HOME, stopped by PID afterwards."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = serving.api_url(port)
    env = tool_env(**serving.server_env(url, home))
    server = serving.start_server(port, home / "server.log", env)
    try:
        serving.wait_healthy(url, timeout=240, proc=server)
        yield env
    finally:
        serving.terminate(server)


def tuneline_run(project, env) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "tasks.cli", "run", "--project-dir", str(project), cwd=project, env=env)


def test_flow_run_leaves_dvc_clean_and_dvc_repro_leaves_flow_nothing(prefect_env, tmp_path, tiny_model_dir):
    a = make_project(tmp_path / "a", tiny_params(tiny_model_dir))
    first = tuneline_run(a, prefect_env)
    assert "stages run: prepare, validate, preprocess, train, evaluate" in first.stdout
    assert "decision: candidate v1 PROMOTED; production is v1" in first.stdout
    assert (a / "models/production/config.json").exists() and (a / "models/registry.dvc").exists()
    assert dvc(a, "status", "--json").stdout.strip() in ("{}", "")  # the flow wrote dvc.lock and dvc-added the registry
    assert ran_stages(dvc(a, "repro").stdout) == []
    rerun = tuneline_run(a, prefect_env)  # nothing changed: no stage runs and no new model version appears
    assert "stages run: none" in rerun.stdout and "decision: unchanged; production is v1" in rerun.stdout

    b = make_project(tmp_path / "b", tiny_params(tiny_model_dir))
    assert len(ran_stages(dvc(b, "repro").stdout)) == 5
    again = tuneline_run(b, prefect_env)
    assert "stages run: none" in again.stdout
    assert dvc(b, "status", "--json").stdout.strip() in ("{}", "")


def test_deployment_run_completes_against_real_server(prefect_env, tmp_path, tiny_model_dir):
    project = make_project(tmp_path / "deployed", tiny_params(tiny_model_dir))
    serve = serving.start_serving(project, tmp_path / "serve.log", prefect_env)
    try:
        deadline = time.monotonic() + 120
        while True:  # the serve process registers the deployment a few seconds after it starts
            listed = sh(sys.executable, "-m", "prefect", "deployment", "ls", cwd=project, env=prefect_env, check=False)
            if "training/default" in listed.stdout or time.monotonic() > deadline:
                break
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(1)
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
    finally:
        serving.terminate(serve)

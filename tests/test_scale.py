"""Issue 14: past one machine. A real S3-compatible server (moto) as the DVC remote, a real PostgreSQL behind
`prefect server start`, a process work pool with separately started workers, and the server-wide project lock.

Every server is started on 127.0.0.1 by the test and stopped by PID. Run alone with `pytest -m scale`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tasks.orchestration import prefect_server as serving
from tests.conftest import (REPO, all_flow_run_artifacts, api_client, created_flow_run_id, free_port, make_project,
                            sh, stop_process, tiny_params, tool_env, tuneline, wait_for, wait_model_ready)

pytestmark = [pytest.mark.scale, pytest.mark.integration]

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server (pip install moto[server]) with a bucket `tuneline`; AWS test credentials in os.environ."""
    import boto3

    log = tmp_path_factory.mktemp("moto") / "moto.log"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=tool_env(**AWS),
                            start_new_session=True)
    try:
        wait_port(port, proc, log)
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url, **{k.lower(): v for k, v in AWS.items() if k != "AWS_DEFAULT_REGION"},
                     region_name="us-east-1").create_bucket(Bucket="tuneline")
        yield url
    finally:
        serving.terminate(proc)


def git_project(root: Path, params: dict) -> Path:
    """make_project plus the repository's .gitignore (models/production is a machine-local link)."""
    project = make_project(root, params)
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    sh("git", "add", ".gitignore", cwd=project)
    sh("git", "commit", "-qm", "gitignore", cwd=project)
    return project


def test_s3_remote_carries_data_models_and_registry_to_a_fresh_clone(prefect_env, tmp_path, tiny_model_dir,
                                                                       s3_endpoint):
    env = {**prefect_env, **AWS}
    origin = tmp_path / "origin.git"
    sh("git", "init", "-q", "--bare", str(origin), cwd=tmp_path)
    a = git_project(tmp_path / "a", tiny_params(tiny_model_dir))
    sh("git", "remote", "add", "origin", str(origin), cwd=a)
    added = tuneline(a, env, "remote", "add", "s3://tuneline/store", "--endpoint-url", s3_endpoint)
    assert "default DVC remote 'storage': s3://tuneline/store" in added.stdout
    run = tuneline(a, env, "run", "--project-dir", str(a))  # trains, promotes v1, then pushes (remote is set)
    assert "decision: candidate v1 PROMOTED" in run.stdout
    assert "dvc push -> storage" in run.stdout + run.stderr
    sh("git", "add", "-A", cwd=a)
    sh("git", "commit", "-qm", "v1", cwd=a)
    sh("git", "push", "-q", "origin", "HEAD:main", cwd=a)

    b = tmp_path / "b"
    sh("git", "clone", "-q", "--branch", "main", str(origin), str(b), cwd=tmp_path)
    assert not (b / "models/production").exists()
    pulled = tuneline(b, env, "pull", "--project-dir", str(b))
    assert "restored the production link to v1 from the event log" in pulled.stdout
    cloud = sh(sys.executable, "-m", "dvc", "status", "--cloud", "--json", cwd=b, env=env)
    assert cloud.stdout.strip() in ("{}", ""), cloud.stdout  # everything the clone uses is on the remote
    assert "production v1: its weights match the sha256 recorded at its promotion" in pulled.stdout
    local = sh(sys.executable, "-m", "dvc", "status", "--json", cwd=b, env=env)
    assert local.stdout.strip() in ("{}", ""), local.stdout  # the pull left the workspace as dvc.lock records it
    assert "verify = true" in (a / ".dvc/config").read_text()  # downloads are re-hashed against the record
    listed = tuneline(b, tool_env(COLUMNS="250"), "models")
    assert "production: v1" in listed.stdout

    texts = pd.DataFrame({"text": ["@united lost my bag again", "thanks @jetblue, great crew", "flight was ok"] * 5})
    texts.to_csv(tmp_path / "texts.csv", index=False)
    for clone in (a, b):
        tuneline(clone, env, "predict", str(tmp_path / "texts.csv"), "-o", str(tmp_path / f"{clone.name}.csv"))
    assert pd.read_csv(tmp_path / "a.csv").equals(pd.read_csv(tmp_path / "b.csv"))

    # Replicas: two model servers, on clones that share the remote, follow it; a promotion in a third clone,
    # pushed, reaches both within the follow interval, with no restart.
    c = tmp_path / "c"
    sh("git", "clone", "-q", "--branch", "main", str(origin), str(c), cwd=tmp_path)
    tuneline(c, env, "pull", "--project-dir", str(c))  # from the remote: the same registry as b
    servers = {}
    for clone in (b, c):
        port = free_port()
        servers[clone.name] = (f"http://127.0.0.1:{port}", subprocess.Popen(
            [sys.executable, "-m", "tasks.cli", "serve-model", "--project-dir", str(clone), "--port", str(port),
             "--follow-remote", "3"], env=env, stdout=(tmp_path / f"serve-{clone.name}.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for name, (url, proc) in servers.items():
            wait_model_ready(url, proc, tmp_path / f"serve-{name}.log")
            assert httpx.post(f"{url}/predict", json={"inputs": ["hi"]}).json()["model_version"] == 1
        promoted = tuneline(a, env, "run", "-S", "train.seed=7", "-S", "promote.min_delta=-1.0", "-S",
                            "promote.max_class_drop=1.0")  # another candidate, promoted, then pushed by the flow
        said = promoted.stdout + promoted.stderr
        assert "candidate v2 PROMOTED" in said and "dvc push -> storage" in said, said[-3000:]
        pushed_at = time.monotonic()
        for name, (url, proc) in servers.items():
            wait_for(lambda: httpx.post(f"{url}/predict", json={"inputs": ["hi"]}, timeout=30
                                        ).json()["model_version"] == 2, 60, f"replica {name} to answer with v2")
        assert time.monotonic() - pushed_at < 60
    finally:
        for _, proc in servers.values():
            stop_process(proc)


class Postgres:
    """The system's PostgreSQL (Debian's postgresql package: Prefect needs its pg_trgm extension), in a temporary
    data directory on a free port, run as the `postgres` user when the tests run as root (postgres refuses root)."""

    def __init__(self, root: Path):
        self.bin = Path(shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl").resolve().parent
        self.data, self.port = root / "data", free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(root, "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.run("pg_ctl", "-D", str(self.data), "-l", str(root / "postgres.log"), "-w", "start", "-o",
                 f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1")

    def run(self, tool: str, *args: str) -> str:
        proc = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def sql(self, query: str) -> str:
        return self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc", query).strip()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="module")
def postgres_prefect(tmp_path_factory):
    """A real `prefect server start` on PostgreSQL (PREFECT_API_DATABASE_CONNECTION_URL)."""
    if not (shutil.which("pg_ctl") or Path("/usr/lib/postgresql/15/bin/pg_ctl").exists()):
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (see README, 'Scaling out')")
    root = tmp_path_factory.mktemp("scale")
    pg = Postgres(Path(tempfile.mkdtemp(prefix="tuneline-pg-")))  # /tmp: reachable by the postgres user
    port = free_port()
    url = serving.api_url(port)
    env = tool_env(**serving.server_env(url, root / "prefect-home"), PREFECT_API_DATABASE_CONNECTION_URL=pg.url)
    server = serving.start_server(port, root / "server.log", env)
    try:
        serving.wait_healthy(url, timeout=240, proc=server)
        yield {k: v for k, v in env.items() if k != "PREFECT_API_DATABASE_CONNECTION_URL"}, pg
    finally:
        serving.terminate(server)
        pg.stop()
        shutil.rmtree(pg.data.parent, ignore_errors=True)


def start_worker(pool: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", "worker", "--pool", pool], cwd=log.parent,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def flow_run_state(env: dict, flow_run_id: str) -> dict:
    with api_client(env) as api:
        run = api.get(f"/flow_runs/{flow_run_id}")
        run.raise_for_status()
    return run.json()["state"]


def wait_final(env: dict, flow_run_id: str, logs: list[Path], timeout: float = 400) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = flow_run_state(env, flow_run_id)
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not finished:\n" + "\n".join(p.read_text()[-3000:] for p in logs))


def test_workers_run_deployments_from_a_postgresql_server_one_retraining_at_a_time(postgres_prefect, tmp_path,
                                                                                     tiny_model_dir):
    """Two clones of one repository sharing a DVC remote (as on two machines: no shared disk lock), deployed to one
    process work pool with `tuneline deploy`, and two separately started workers. Two retraining runs started at
    once: one takes the server-wide slot and completes (its artifacts readable through the API, its row in
    PostgreSQL); the other ends saying the project is busy."""
    env, pg = postgres_prefect
    assert pg.sql("select version();").startswith("PostgreSQL ")
    origin = git_project(tmp_path / "origin", tiny_params(tiny_model_dir, train={"epochs": 3}))
    # What the two machines share is their DVC remote (data, models, registry): so they share one slot.
    tuneline(origin, env, "remote", "add", str(tmp_path / "shared-store"))
    sh("git", "commit", "-qam", "the team's DVC remote", cwd=origin)
    clones = []
    for name in ("a", "b"):
        clone = tmp_path / name
        sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
        clones.append(clone)
        deployed = tuneline(clone, env, "deploy", "--pool", "shared", "--name", f"clone-{name}", "--project-dir",
                            str(clone))
        assert f"deployed retraining/clone-{name} -> work pool 'shared'" in deployed.stdout
    fast = {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}  # both runs start within seconds of each other
    workers = [start_worker("shared", fast, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        ids = [created_flow_run_id(sh(sys.executable, "-m", "prefect", "deployment", "run",
                                      f"retraining/clone-{name}", "--param", "force=true", cwd=clone,
                                      env=env).stdout) for name, clone in zip("ab", clones)]
        states = [wait_final(env, i, [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]) for i in ids]
    finally:
        for worker in workers:
            serving.terminate(worker)
    assert [s["type"] for s in states] == ["COMPLETED", "COMPLETED"]
    busy = [s for s in states if "the project is busy" in (s.get("message") or "")]
    assert len(busy) == 1 and "holds the server-wide slot 'tuneline-" in busy[0]["message"], states
    versions = [len(json.loads("[" + ",".join((c / "models/registry/events.jsonl").read_text().split("\n")[:-1]) + "]"))
                if (c / "models/registry/events.jsonl").exists() else 0 for c in clones]
    assert sorted(versions) == [0, 1]  # one new version in all, not two
    ran = ids[[i for i, s in enumerate(states) if s not in busy][0]]
    shown = {a["key"] for a in all_flow_run_artifacts(env, ran) if a["key"]}
    assert {"retraining-plan", "training-metrics", "promotion-decision"} <= shown  # the run and its training subflow
    assert int(pg.sql(f"select count(*) from flow_run where id = '{ran}';")) == 1  # stored in PostgreSQL

"""The project lock across runs: a busy project names its holder, and the next run resumes a killed one."""
from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import make_project, new_reviews, registry_records, tiny_params, tuneline, wait_for

pytestmark = pytest.mark.integration


def test_a_second_run_while_the_project_is_locked_exits_with_a_clear_message(prefect_env, tmp_path, tiny_model_dir):
    from filelock import FileLock

    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir))
    drop = project / "data/incoming"
    drop.mkdir(parents=True)
    new_reviews(drop / "batch.csv")
    (project / ".tuneline").mkdir()
    with FileLock(str(project / ".tuneline/state.lock")):  # another process holds the project, as a run would
        busy = tuneline(project, prefect_env, "monitor", check=False)
        busy_retrain = tuneline(project, prefect_env, "retrain", check=False)
    for result in (busy, busy_retrain):
        assert result.returncode == 2
        assert "the project is busy: another run holds" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert (drop / "batch.csv").exists() and not (project / "data/batches").exists()

    from tasks.orchestration.locking import project_lock

    with project_lock(project, 0, "tuneline run"):  # held as a run holds it: the message names the holder
        for args in (["run"], ["promote"], ["rollback", "v1"]):
            result = tuneline(project, prefect_env, *args, check=False)
            assert result.returncode == 2, args
            assert f"the project is busy: `tuneline run` (PID {os.getpid()}, since " in result.stderr, result.stderr
            assert "Traceback" not in result.stderr + result.stdout
    assert not (project / "data/raw").exists()  # the busy training run changed nothing


def test_two_training_runs_at_once_one_promotes_the_other_stops_with_one_line(prefect_env, tmp_path, tiny_model_dir):
    import subprocess

    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir))
    cmd = [sys.executable, "-m", "tasks.cli", "run"]
    runs = [subprocess.Popen(cmd, cwd=project, env=prefect_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=600), *p.communicate()) for p in runs)
    (ok, ok_out, _), (busy, busy_out, busy_err) = results
    assert ok == 0 and "candidate v1 PROMOTED" in ok_out
    assert busy == 2 and "the project is busy: `training flow` (PID " in busy_err
    assert "Traceback" not in busy_out + busy_err and "rwlock" not in busy_out + busy_err
    assert [r["version"] for r in registry_records(project)] == [1]


def test_a_training_run_killed_mid_train_is_resumed_by_the_next_run_without_cleanup(prefect_env, tmp_path,
                                                                                     tiny_model_dir):
    import signal
    import subprocess

    import psutil

    # A budget long enough that the kill lands mid-training even on a fast CPU (bf16: ~1000 samples/s on this model).
    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir, train={
        "epochs": 20, "checkpoint_every_steps": 5, "batch_size": 8, "early_stopping_patience": 20}))
    # SHELL=/bin/sh: dvc runs the stage through dash, which stays the stage's parent and outlives a killed dvc.
    first = subprocess.Popen([sys.executable, "-m", "tasks.cli", "run"], cwd=project,
                             env={**prefect_env, "SHELL": "/bin/sh"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = project / ".tuneline/checkpoints/train"
    try:
        wait_for(lambda: any(checkpoints.rglob("last.pt")), 300, "a training checkpoint", poll=0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the CLI and its flow: no cleanup of theirs runs
        first.wait()

    def stage_still_running() -> bool:
        # `dvc repro` runs in its own session and dies with the CLI; its train stage stops at a safe point.
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "stage train" in cmdline and proc.info["cwd"] == str(project):
                return True
        return False

    wait_for(lambda: not stage_still_running(), 120, "the orphaned train stage to stop", poll=0.5)
    assert not (project / "models/candidate/config.json").exists()  # stopped, not finished
    assert any(checkpoints.rglob("last.pt"))
    second = tuneline(project, prefect_env, "run")  # no lock to delete, no rwlock to clear
    assert "resumed at step " in second.stdout and "candidate v1 PROMOTED" in second.stdout, second.stdout[-3000:]
    assert [r["version"] for r in registry_records(project)] == [1]

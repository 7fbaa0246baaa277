"""Ctrl-C and SIGTERM on a real `tuneline run` (Prefect's temporary server, real `dvc repro`): the run stops within
seconds with one line and exit 130 or 143, nothing it started keeps running, the project lock and the server-wide
slot are free, and the next run resumes training from the checkpoint the stopped stage saved."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_project, tiny_params, tool_env

pytestmark = pytest.mark.integration


def processes_with(home: Path) -> list[str]:
    """Command lines of the live processes whose environment names this PREFECT_HOME (everything a run started)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"PREFECT_HOME={home}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return found


def start_run(project: Path, env: dict, log: Path) -> subprocess.Popen:
    """`tuneline run` as a terminal runs it: the leader of its own process group."""
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", "run"], cwd=project, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - start


def test_ctrl_c_and_sigterm_stop_a_run_cleanly_and_the_next_run_resumes(tmp_path, tiny_model_dir):
    from tasks.orchestration.locking import project_lock

    home = tmp_path / "prefect-home"
    env = tool_env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)  # no server answers: the command starts Prefect's temporary one
    params = tiny_params(tiny_model_dir, train={"epochs": 30, "checkpoint_every_steps": 4,
                                                "early_stopping_patience": 30})
    project = make_project(tmp_path / "p", params)
    checkpoints = project / ".tuneline/checkpoints/train"

    log1 = tmp_path / "run1.log"
    run = start_run(project, env, log1)
    wait_until(lambda: any(checkpoints.rglob("last.pt")), 240, "training to write its first checkpoint")
    os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group gets it
    took = wait_until(lambda: run.poll() is not None, 60, "the run to stop")
    out = log1.read_text()
    assert run.returncode == 130, out[-3000:]
    assert took < 20, f"stopping took {took:.1f} s"
    assert out.count("tuneline: stopped by Ctrl-C (SIGINT)") == 1 and "Traceback" not in out, out[-3000:]
    wait_until(lambda: not processes_with(home), 15, f"every process of the run to end: {processes_with(home)}")
    with project_lock(project, 0):  # free: nobody holds it
        pass
    assert not (project / ".tuneline/server-slot.json").exists()
    assert len(list(checkpoints.rglob("last.pt"))) == 1  # the stopped stage's state, for the next run

    log2 = tmp_path / "run2.log"
    run = start_run(project, env, log2)
    wait_until(lambda: "train: resuming at step" in log2.read_text(), 240, "the next run to resume training")
    os.kill(run.pid, signal.SIGTERM)  # `timeout`, systemd and `docker stop` send SIGTERM to the command alone
    took = wait_until(lambda: run.poll() is not None, 60, "the run to stop")
    out = log2.read_text()
    assert run.returncode == 143 and took < 20, out[-3000:]
    assert out.count("tuneline: stopped by SIGTERM") == 1 and "Traceback" not in out, out[-3000:]
    assert "reclaimed" not in out and "busy" not in out  # the first run released its slot and lock
    wait_until(lambda: not processes_with(home), 15, f"every process of the run to end: {processes_with(home)}")

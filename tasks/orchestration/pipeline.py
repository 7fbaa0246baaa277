"""The DVC runner: stages, `dvc add`, `dvc status` and any other DVC command from Python, so Prefect tasks and
`dvc repro` share one cache record: dvc.lock.

Plain functions (no Prefect here): the flows wrap them, the tests call them directly.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tasks.orchestration.signals import child_group, die_with_parent, stopping

STAGES = ("prepare", "validate", "preprocess", "train", "evaluate", "reference")
USER_ERROR_EXIT = 2  # what the tuneline CLI exits with for bad params or bad data (not worth retrying)


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, tail: str, user_error: bool):
        self.stage, self.returncode, self.tail, self.user_error = stage, returncode, tail, user_error
        super().__init__(f"stage {stage!r} failed (dvc exit {returncode}):\n{tail}")


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool  # False when DVC found nothing changed and skipped it
    seconds: float


def tool_env() -> dict[str, str]:
    """Environment for DVC: the interpreter's bin dir first, so stage commands find `tuneline` without activation."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


RAN_MARKER = re.compile(r"Running stage '([\w.@-]+)'")
PROGRESS_BAR = re.compile(r"^(?P<desc>[^\r\n]*?):\s+(?P<percent>\d+)%\|")  # a tqdm bar: "train epoch 1/3:  40%|..."
LineListener = Callable[[str], None]
ProgressListener = Callable[[str, float], None]  # (bar description, fraction done)


def _stream(cmd: list[str], cwd: Path, on_line: Optional[LineListener] = None,
            on_progress: Optional[ProgressListener] = None) -> tuple[int, str, set[str]]:
    """Run cmd, echoing its output live to the terminal as it comes (progress bars included).

    Complete lines (and each progress bar's final state) go to `on_line`; every progress-bar update goes to
    `on_progress`. Returns the exit code, the output's tail (for error messages) and every stage DVC said it ran,
    seen on any line: a chatty stage must not push its "Running stage" line out of the tail.
    """
    tail: deque[str] = deque(maxlen=40)
    ran: set[str] = set()

    def segment(text: str, ended_line: bool) -> None:
        bar = PROGRESS_BAR.match(text)
        if bar and on_progress:
            on_progress(bar["desc"].strip(), int(bar["percent"]) / 100)
        if bar and not ended_line:
            return  # an intermediate bar state: the terminal shows it, logs keep only the final one
        tail.append(text)
        ran.update(RAN_MARKER.findall(text))
        if on_line:
            on_line(text)

    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    # Its own session: a terminal's Ctrl-C reaches tuneline only, which stops this child itself (signals.py).
    # It also dies with tuneline (kill -9 included): its stage then stops at a safe point (stop_with_owner).
    with subprocess.Popen(cmd, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True, preexec_fn=die_with_parent) as proc, child_group(proc.pid):
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
            text = decoder.decode(chunk)
            if stopping():
                continue  # a stopped run's last words (DVC's "failed to reproduce") are not the user's news
            sys.stdout.write(text)
            sys.stdout.flush()
            pending += text
            while (end := re.search(r"[\r\n]", pending)) is not None:
                piece, pending = pending[:end.start()], pending[end.end():]
                if piece.strip():
                    segment(piece.rstrip(), ended_line=end.group() == "\n")
        if pending.strip():
            segment(pending.rstrip(), ended_line=True)
    return proc.returncode, "\n".join(tail), ran


def reproduce_stage(stage: str, project_dir: str | Path = ".", on_line: Optional[LineListener] = None,
                    on_progress: Optional[ProgressListener] = None) -> StageRun:
    """`dvc repro --single-item STAGE`: runs the stage only if its deps, params or outputs changed."""
    start = time.perf_counter()
    code, tail, ran = _stream([sys.executable, "-m", "dvc", "repro", "--single-item", stage], Path(project_dir),
                              on_line, on_progress)
    if code != 0:
        user_error = bool(re.search(rf"exited with {USER_ERROR_EXIT}\b", tail)) or "tuneline: error:" in tail
        raise StageFailed(stage, code, tail, user_error)
    return StageRun(stage, stage in ran, time.perf_counter() - start)


class DvcFailed(RuntimeError):
    """A DVC command exited non-zero; the message carries the command and DVC's own output."""


def run_dvc(args: list[str], project_dir: str | Path = ".", on_line: Optional[LineListener] = None,
            capture: bool = False) -> str:
    """`dvc ARGS` in the project: streamed live (its lines to `on_line`), or captured (`capture`, e.g. --json
    output); returns the output's tail (streamed) or all of stdout (captured); raises DvcFailed on a non-zero exit."""
    cmd = [sys.executable, "-m", "dvc", *args]
    if capture:
        proc = subprocess.run(cmd, cwd=project_dir, env=tool_env(), capture_output=True, text=True)
        code, out, tail = proc.returncode, proc.stdout, (proc.stderr or proc.stdout)[-3000:]
    else:
        code, tail, _ = _stream(cmd, Path(project_dir), on_line)
        out = tail
    if code != 0:
        raise DvcFailed(f"dvc {' '.join(args)} failed (exit {code}):\n{tail}")
    return out


def dvc_add(path: str | Path, project_dir: str | Path = ".") -> None:
    """Version a directory the flows changed (the registry) with DVC, so it is restorable like any DVC output."""
    run_dvc(["add", "--quiet", str(path)], project_dir)


@contextmanager
def dvc_add_alongside(path: str | Path, project_dir: str | Path = "."):
    """`dvc add PATH` in its own process while the block runs (it uses the second core for its 2-3 s of imports and
    hashing); at the end of the block it is waited for, and its failure raised. DVC's default cache copies files,
    so the block may read PATH meanwhile."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "add", "--quiet", str(path)], cwd=project_dir,
                            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    with child_group(proc.pid):
        try:
            yield
        finally:
            output, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"dvc add {path} failed:\n{output[-4000:]}")


def run_summary(runs: list[StageRun], decision=None) -> dict:
    """What a training run did, for the flow's return value and `tuneline run`'s printout."""
    summary = {"ran": [r.stage for r in runs if r.ran], "skipped": [r.stage for r in runs if not r.ran]}
    if decision is not None:
        summary.update(version=decision.version, promoted=decision.promoted, reasons=decision.reasons,
                       production_version=decision.production_version, unchanged=decision.unchanged)
    return summary


def dvc_status(project_dir: str | Path = ".") -> dict:
    return json.loads(run_dvc(["status", "--json"], project_dir, capture=True) or "{}")

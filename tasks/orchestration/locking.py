"""One lock per project for every run that changes its state: training (`tuneline run`, the training deployment),
promotion, rollback, ingest, monitoring and retraining. A flow run also takes the project's server-wide slot
(server_slot.py), the lock that holds across machines.

A second run waits `monitor.lock_timeout_s`, then stops with one line naming what holds the lock (command, PID, since
when) and changes nothing. The lock is an OS file lock (flock): the kernel drops it when its holder dies, even by
kill -9, so a dead holder never blocks anyone and nobody is told to delete files. Beside it, `state.lock.json` says
who holds it, for that message. The lock is re-entrant within a process (retraining runs the training flow inside
its own lock). Kept free of heavy imports: the CLI names ProjectBusy at start-up.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".tuneline/state.lock"
HOLDER_FILE = ".tuneline/state.lock.json"
_held: dict[str, int] = {}  # lock path -> depth, for this process


class ProjectBusy(RuntimeError):
    """Another state-changing run holds the project lock."""


def current_command() -> str:
    """How this process was started, as a user would type it (tuneline run, prefect deployment run, ...)."""
    name = Path(sys.argv[0]).name
    if name in ("-m", "-c", "") or name.endswith(".py"):
        name = "python " + " ".join(sys.argv[:1])
    from tasks.redaction import redact

    return redact(" ".join([name, *sys.argv[1:3]]).strip())


def holder(root: Path, wait_s: float = 3.0) -> str:
    """Who holds the lock, in words; 'another run' when it did not say. Asked only after the lock was refused, so a
    holder exists: one that took the lock a moment ago may not have written its file yet, so wait a little for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads((Path(root) / HOLDER_FILE).read_text(encoding="utf-8"))
            return f"`{info['command']}` (PID {info['pid']}, since {info['since']})"
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                return "another run"
            time.sleep(0.1)


@contextmanager
def project_lock(root: Path, timeout_s: float, what: str | None = None) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path = Path(root).resolve() / LOCK_FILE
    key = str(path)
    if _held.get(key):  # this process holds it already (a flow inside a flow)
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise ProjectBusy(f"the project is busy: {holder(Path(root).resolve())} holds {path}; nothing was changed "
                          f"(waited {timeout_s:g} s, monitor.lock_timeout_s): try again when it has finished") from None
    _held[key] = 1
    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    info = {"command": what or current_command(), "pid": os.getpid(), "since": since}
    (path.parent / Path(HOLDER_FILE).name).write_text(json.dumps(info) + "\n", encoding="utf-8")
    try:
        yield
    finally:
        _held.pop(key, None)
        (path.parent / Path(HOLDER_FILE).name).unlink(missing_ok=True)
        lock.release()


def lock_timeout(root: Path) -> float:
    """How long a run waits for the project lock: params.yaml's monitor.lock_timeout_s (0 without a params file)."""
    from tasks.config import load_params

    params = Path(root) / "params.yaml"
    return load_params(params).monitor.lock_timeout_s if params.exists() else 0.0

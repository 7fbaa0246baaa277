"""One lock per project for the runs that change its state (ingest, monitoring, retraining).

A second run waits `monitor.lock_timeout_s`, then stops with a message and changes nothing. Kept free of heavy
imports: the CLI names ProjectBusy at start-up.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".tuneline/state.lock"


class ProjectBusy(RuntimeError):
    """Another monitoring or retraining run holds the project lock."""


@contextmanager
def project_lock(root: Path, timeout_s: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path = Path(root) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise ProjectBusy(f"another monitoring or retraining run holds {path} (waited {timeout_s:g} s, "
                          "monitor.lock_timeout_s); nothing was changed: try again when it has finished") from None
    try:
        yield
    finally:
        lock.release()

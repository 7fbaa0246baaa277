"""What every flow does around its work: hold the project's run lock (this machine's file lock, then the
server-wide slot), and end Completed, with the reason as its message and no retry, when another run holds it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

from prefect import get_run_logger
from prefect.states import Completed

from tasks.orchestration.locking import ProjectBusy, lock_timeout
from tasks.orchestration.server_slot import run_lock
from tasks.redaction import redact

T = TypeVar("T")


def run_locked(root: Path, what: str, body: Callable[[], T], **busy_result: Any):
    """body() under the run lock; a busy project is a normal outcome for a scheduled run: nothing done, say why.
    `busy_result`: extra fields of the busy run's result (beside `busy`, the message)."""
    try:
        with run_lock(root, lock_timeout(root), what):
            return body()
    except ProjectBusy as busy:
        said = redact(str(busy))
        get_run_logger().warning(said)
        return Completed(message=said, data={"busy": said, **busy_result})

"""One lock per project for every run that changes its state: training (`tuneline run`, the training deployment),
promotion, rollback, ingest, monitoring and retraining.

A second run waits `monitor.lock_timeout_s`, then stops with one line naming what holds the lock (command, PID, since
when) and changes nothing. The lock is an OS file lock (flock): the kernel drops it when its holder dies, even by
kill -9, so a dead holder never blocks anyone and nobody is told to delete files. Beside it, `state.lock.json` says
who holds it, for that message. The lock is re-entrant within a process (retraining runs the training flow inside
its own lock). Kept free of heavy imports: the CLI names ProjectBusy at start-up.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

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
    return " ".join([name, *sys.argv[1:3]]).strip()


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


def project_identity(root: Path) -> str:
    """The same project on every machine: its git origin URL (clones of one repository share it), else its path."""
    import subprocess

    proc = subprocess.run(["git", "-C", str(root), "config", "--get", "remote.origin.url"], capture_output=True,
                          text=True)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else str(Path(root).resolve())


def limit_name(root: Path) -> str:
    import hashlib

    return f"tuneline-{hashlib.sha256(project_identity(root).encode()).hexdigest()[:12]}"


SLOT_FILE = ".tuneline/server-slot.json"  # the lease this clone's running flow holds in the server-wide limit
LEASE_S = 60  # renewed while the run lives; a holder that dies without releasing blocks other machines this long


# A request that times out on the client may still take the slot on the server (for a lease nobody holds), so the
# first ask gets time for a loaded server to answer; then a slot still free is asked for again, for up to SLOW_SERVER_S.
ACQUIRE_MIN_S = 5.0
SLOW_SERVER_S = 30


def slot_taken(name: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.active_slots >= limit.limit


def release_leftover_lease(root: Path) -> Optional[str]:
    """A lease recorded by a run of this clone that died (killed, machine lost power) without releasing it.

    Called while holding the project's file lock, which only a live run can hold: the file is then always a dead
    run's, and its lease is released at once instead of blocking the next run until it expires."""
    from uuid import UUID

    from prefect.concurrency._sync import release_concurrency_slots_with_lease

    path = Path(root) / SLOT_FILE
    try:
        lease = json.loads(path.read_text(encoding="utf-8"))["lease_id"]
    except (OSError, ValueError, KeyError):
        return None
    try:
        release_concurrency_slots_with_lease(UUID(lease))
    except Exception:  # expired already, or another server: nothing left to release
        pass
    path.unlink(missing_ok=True)
    return lease


@contextmanager
def server_slot(root: Path, timeout_s: float) -> Iterator[None]:
    """The project's slot in a Prefect global concurrency limit: the lock that also holds across machines (workers
    on several hosts sharing one server), where a file lock cannot. Re-entrant within a process, like project_lock.
    Take it only inside project_lock (run_lock does).

    Uses Prefect's lease functions directly (pinned prefect 3.8.8; `concurrency()` hides the lease id), so that a
    killed run's lease can be released by the next run of the same clone."""
    from prefect.concurrency._leases import maintain_concurrency_lease
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease
    from prefect.settings import PREFECT_API_URL

    name = limit_name(root)
    if _held.get(name):
        _held[name] += 1
        try:
            yield
        finally:
            _held[name] -= 1
        return
    from tasks.orchestration.prefect_objects import ensure_limit

    ensure_limit(name)
    release_leftover_lease(root)
    # Prefect's acquisition service logs a timeout as an ERROR with a traceback; here it is an expected outcome.
    quiet = logging.getLogger("prefect._internal.concurrency")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    deadline = time.monotonic() + timeout_s + SLOW_SERVER_S
    try:
        while True:
            try:
                acquired = acquire_concurrency_slots_with_lease([name], 1,
                                                                timeout_seconds=max(timeout_s, ACQUIRE_MIN_S),
                                                                lease_duration=LEASE_S, strict=True,
                                                                suppress_warnings=True)
                break
            except TimeoutError:
                # A timeout also comes from a server too busy to answer in time. Only a slot that is really taken
                # makes the project busy; a free one is asked for again, for at most SLOW_SERVER_S more.
                if slot_taken(name) or time.monotonic() > deadline:
                    raise ProjectBusy(
                        f"the project is busy: another run of it holds the server-wide limit {name!r} on "
                        f"{PREFECT_API_URL.value() or 'the Prefect server'} (a worker on this or another machine); "
                        f"nothing was changed (waited {timeout_s:g} s, monitor.lock_timeout_s): try again when it "
                        "has finished") from None
    finally:
        quiet.setLevel(level)
    slot_file = Path(root) / SLOT_FILE
    slot_file.write_text(json.dumps({"lease_id": str(acquired.lease_id), "pid": os.getpid()}) + "\n",
                         encoding="utf-8")
    _held[name] = 1
    try:
        with maintain_concurrency_lease(acquired.lease_id, LEASE_S, raise_on_lease_renewal_failure=False,
                                        suppress_warnings=True):
            yield
    finally:
        _held.pop(name, None)
        release_concurrency_slots_with_lease(acquired.lease_id)
        slot_file.unlink(missing_ok=True)


@contextmanager
def run_lock(root: Path, timeout_s: float, what: str | None = None) -> Iterator[None]:
    """What a flow run takes: this machine's project lock, then the server-wide slot."""
    with project_lock(root, timeout_s, what), server_slot(root, timeout_s):
        yield

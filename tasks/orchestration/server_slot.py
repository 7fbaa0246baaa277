"""The project's slot in a Prefect global concurrency limit of 1: the lock that also holds across machines (workers on
several hosts sharing one server), where a file lock cannot.

What shares a slot: the runs that share state. With a default DVC remote, every clone that pushes to it shares its
data and registry, so the slot is named from the remote's URL; without one, from this project's path on this host
(two unrelated clones of one upstream never block each other).

A slot never outlives its run. The holder renews its lease and a holder record (a Prefect variable named like the
limit: host, PID, command, last renewal) every RENEW_S seconds. The next acquisition, from any clone or worker,
reclaims a slot whose holder is gone: on this host, a holder PID that no longer runs; on another host, a record not
renewed for LEASE_S + GRACE_S seconds. It revokes the dead lease if the server still has it (Prefect keeps leases in
the server's memory: a restarted or temporary server has lost it) and resets the count otherwise.

If renewing fails, the run goes on only until the next state change: `confirm_slots()` renews once more right before
promotion and push, and raises SlotLost when the slot is gone, so a run that lost its slot never promotes or pushes.

Uses Prefect's lease functions directly (pinned prefect 3.8.8; `concurrency()` hides the lease id).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional
from uuid import UUID

from tasks.orchestration.locking import ProjectBusy, current_command, project_lock
from tasks.redaction import redact

SLOT_FILE = ".tuneline/server-slot.json"  # the lease this clone's running flow holds
LEASE_S = 60   # Prefect's shortest lease
RENEW_S = 15   # renewal period: three renewals can fail before the lease runs out
GRACE_S = 30   # clocks of two hosts may disagree this much
# A request that times out on the client may still take the slot on the server (for a lease nobody holds), so the
# first ask gets time for a loaded server to answer; a slot still free is asked for again, for up to SLOW_SERVER_S.
ACQUIRE_MIN_S = 5.0
SLOW_SERVER_S = 30


class SlotLost(RuntimeError):
    """This run's server-wide slot is gone (its lease could not be renewed): it must not promote or push."""


def project_identity(root: Path) -> str:
    """What the runs of this project really share: its default DVC remote, else its path on this host."""
    from dvc.config import Config

    root = Path(root).resolve()
    try:
        config = Config(dvc_dir=str(root / ".dvc"))
        remote = config["core"].get("remote")
        url = config["remote"][remote]["url"] if remote else None
    except Exception:  # not a DVC project, or a config DVC cannot read: the path is what is shared
        url = None
    return f"dvc-remote:{strip_credentials(url)}" if url else f"path:{socket.gethostname()}:{root}"


def strip_credentials(url: str) -> str:
    """The same remote with or without credentials in its URL is the same remote."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def limit_name(root: Path) -> str:
    import hashlib

    return f"tuneline-{hashlib.sha256(project_identity(root).encode()).hexdigest()[:12]}"


@dataclass
class Holder:
    """Who holds a slot, as its variable on the server says."""
    lease_id: str
    host: str
    pid: int
    command: str
    since: str
    renewed: float  # the holder's clock, seconds since the epoch

    def gone(self) -> Optional[str]:
        """Why this holder is certainly gone, or None while it may live."""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return f"its process {self.pid} on this host no longer runs"
        age = time.time() - self.renewed
        if age > LEASE_S + GRACE_S:
            return f"it last renewed its lease {age:.0f} s ago on {self.host}"
        return None

    def __str__(self) -> str:
        return f"`{self.command}` (PID {self.pid} on {self.host}, since {self.since})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def read_holder(name: str) -> Optional[Holder]:
    with _client() as client:
        variable = client.read_variable_by_name(name)
    try:
        return Holder(**json.loads(variable.value)) if variable is not None else None
    except (TypeError, ValueError):
        return None


def write_holder(name: str, holder: Holder) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    value = json.dumps(holder.__dict__)
    with _client() as client:
        if client.read_variable_by_name(name) is None:
            try:
                client.create_variable(VariableCreate(name=name, value=value))
                return
            except ObjectAlreadyExists:
                pass
        client.update_variable(VariableUpdate(name=name, value=value))


def delete_holder(name: str, lease_id: str) -> None:
    """Remove the holder record if it is still ours."""
    holder = read_holder(name)
    if holder is not None and holder.lease_id == lease_id:
        with _client() as client:
            client.delete_variable_by_name(name)


def slot_taken(name: str) -> bool:
    with _client() as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.active_slots >= limit.limit


def release_lease(lease_id: str) -> bool:
    """Give a lease's slot back; False when the server no longer knows the lease."""
    from prefect.concurrency._sync import release_concurrency_slots_with_lease

    try:
        release_concurrency_slots_with_lease(UUID(lease_id))
        return True
    except Exception:  # expired, revoked, or another server's
        return False


def reclaim(name: str) -> Optional[str]:
    """Free a full slot whose holder is gone; what was done, or None when the holder may still live."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    holder = read_holder(name)
    why = "no holder record (a run that died before writing it, or a lost server)" if holder is None else holder.gone()
    if why is None:
        return None
    if holder is None or not release_lease(holder.lease_id):
        with _client() as client:  # the server lost the lease (a restart): only the count is left to undo
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    with _client() as client:
        try:
            client.delete_variable_by_name(name)
        except Exception:
            pass
    return f"reclaimed the server-wide slot {name!r}: {why}"


def release_leftover_lease(root: Path) -> Optional[str]:
    """A lease recorded by a run of this clone that died (killed, machine lost power) without releasing it.

    Called while holding the project's file lock, which only a live run can hold: the file is then always a dead
    run's, and its lease is released at once."""
    path = Path(root) / SLOT_FILE
    try:
        lease = json.loads(path.read_text(encoding="utf-8"))["lease_id"]
    except (OSError, ValueError, KeyError):
        return None
    release_lease(lease)
    path.unlink(missing_ok=True)
    return lease


@dataclass
class HeldSlot:
    """A slot this process holds: its lease is renewed in a thread, and any renewal failure is kept."""
    name: str
    holder: Holder
    lost: Optional[str] = None
    stop: threading.Event = field(default_factory=threading.Event)

    def renew(self) -> None:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(UUID(self.holder.lease_id), lease_duration=LEASE_S)
            self.holder.renewed = time.time()
            write_holder(self.name, self.holder)
        except Exception as exc:
            self.lost = self.lost or f"{type(exc).__name__}: {redact(str(exc))[:300]}"
            raise SlotLost(f"the server-wide slot {self.name!r} was lost (its lease could not be renewed: "
                           f"{self.lost}); stopped before any promotion or push: nothing was promoted") from None

    def keep(self) -> None:
        while not self.stop.wait(RENEW_S):
            try:
                self.renew()
            except SlotLost:
                return  # kept in self.lost: confirm_slots() stops the run before its next state change


_held: dict[str, tuple[HeldSlot, int]] = {}  # limit name -> (slot, depth), for this process


def confirm_slots() -> None:
    """Right before a promotion or a push: every slot this process holds is renewed now; SlotLost if one is gone.
    A process holding no slot (`tuneline promote` by hand) has nothing to confirm."""
    for slot, _ in list(_held.values()):
        if slot.lost:
            raise SlotLost(f"the server-wide slot {slot.name!r} was lost (its lease could not be renewed: "
                           f"{slot.lost}); stopped before any promotion or push: nothing was promoted")
        slot.renew()


def busy(name: str, timeout_s: float) -> ProjectBusy:
    from prefect.settings import PREFECT_API_URL

    holder = read_holder(name)
    who = str(holder) if holder else "another run of it (a worker on this or another machine)"
    return ProjectBusy(redact(
        f"the project is busy: {who} holds the server-wide slot {name!r} on "
        f"{PREFECT_API_URL.value() or 'the Prefect server'}; nothing was changed (waited {timeout_s:g} s, "
        "monitor.lock_timeout_s): try again when it has finished"))


def acquire(name: str, timeout_s: float) -> str:
    """A lease on the slot (its id); ProjectBusy when a live run holds it."""
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease

    if slot_taken(name) and reclaim(name):
        logging.getLogger("tuneline").warning("reclaimed the server-wide slot %s from a run that is gone", name)
    # Prefect's acquisition service logs a timeout as an ERROR with a traceback; here it is an expected outcome.
    quiet = logging.getLogger("prefect._internal.concurrency")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    deadline = time.monotonic() + timeout_s + SLOW_SERVER_S
    try:
        while True:
            try:
                return str(acquire_concurrency_slots_with_lease([name], 1,
                                                                timeout_seconds=max(timeout_s, ACQUIRE_MIN_S),
                                                                lease_duration=LEASE_S, strict=True,
                                                                suppress_warnings=True).lease_id)
            except TimeoutError:
                # A timeout also comes from a server too busy to answer in time. Only a slot that is really taken
                # makes the project busy; a free one is asked for again, for at most SLOW_SERVER_S more.
                if (slot_taken(name) and not reclaim(name)) or time.monotonic() > deadline:
                    raise busy(name, timeout_s) from None
    finally:
        quiet.setLevel(level)


@contextmanager
def server_slot(root: Path, timeout_s: float, what: Optional[str] = None) -> Iterator[None]:
    """Hold the project's slot while the block runs. Re-entrant within a process. Take it only inside the project's
    file lock (run_lock below does)."""
    from datetime import datetime, timezone

    from tasks.orchestration.prefect_objects import ensure_limit

    name = limit_name(root)
    if name in _held:
        slot, depth = _held[name]
        _held[name] = (slot, depth + 1)
        try:
            yield
        finally:
            _held[name] = (slot, _held[name][1] - 1)
        return
    ensure_limit(name)
    release_leftover_lease(root)
    lease_id = acquire(name, timeout_s)
    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    slot = HeldSlot(name, Holder(lease_id, socket.gethostname(), os.getpid(), what or current_command(), since,
                                 time.time()))
    slot_file = Path(root) / SLOT_FILE
    slot_file.parent.mkdir(parents=True, exist_ok=True)
    slot_file.write_text(json.dumps({"lease_id": lease_id, "pid": os.getpid()}) + "\n", encoding="utf-8")
    write_holder(name, slot.holder)
    _held[name] = (slot, 1)
    keeper = threading.Thread(target=slot.keep, name=f"tuneline-slot-{name}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        _held.pop(name, None)
        slot.stop.set()
        keeper.join(timeout=5)
        release_lease(lease_id)
        try:
            delete_holder(name, lease_id)
        except Exception:  # the server may be gone already (Ctrl-C): the record then expires by itself
            pass
        slot_file.unlink(missing_ok=True)


@contextmanager
def run_lock(root: Path, timeout_s: float, what: str | None = None) -> Iterator[None]:
    """What a flow run takes: this machine's project lock, then the server-wide slot."""
    with project_lock(root, timeout_s, what), server_slot(root, timeout_s, what):
        yield

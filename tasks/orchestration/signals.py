"""Ctrl-C and SIGTERM stop a run within seconds, cleanly.

The commands that run flows (`tuneline run`, `monitor`, `retrain`, `sweep`) hold `stop_on_signals()`. A stage's
`dvc repro` and Prefect's temporary server run in their own sessions, so a terminal's Ctrl-C (sent to the whole
foreground process group) reaches this process only. On the first SIGINT or SIGTERM it:
1. sends SIGTERM to the process groups of the running children (the stage saves a checkpoint and exits; see
   tasks/stages/train.py), and stops echoing their output;
2. raises RunStopped in the main thread, which unwinds the flow (no task is retried) and the run lock, releasing
   the project's file lock and its server-wide slot while the server still answers;
3. leaves the command to print one line and exit 130 (SIGINT) or 143 (SIGTERM).
A second signal while stopping kills the children and exits at once.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_stopping = threading.Event()
_children: set[int] = set()  # process group ids of running child commands
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class RunStopped(KeyboardInterrupt):
    """The run was stopped by a signal. A KeyboardInterrupt, so Prefect ends the run as it does for Ctrl-C (no
    retries) and no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def stopping() -> bool:
    return _stopping.is_set()


@contextmanager
def child_group(pid: int) -> Iterator[None]:
    """A child started with start_new_session=True (its pid is its process group): stopped with the run."""
    _children.add(pid)
    if _stopping.is_set():
        _signal_group(pid, signal.SIGTERM)
    try:
        yield
    finally:
        _children.discard(pid)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _handle(signum: int, frame) -> None:
    if _stopping.is_set():  # a second signal: stop waiting for anything
        for pgid in list(_children):
            _signal_group(pgid, signal.SIGKILL)
        os._exit(128 + signum)
    _stopping.set()
    for pgid in list(_children):
        _signal_group(pgid, signal.SIGTERM)
    # Prefect would print its own crash report for the interrupted run; the command says what happened in one line.
    logging.getLogger("prefect").setLevel(logging.CRITICAL)
    raise RunStopped(signum)


class StopRequest:
    """For a process that stops at a safe point of its own (the train stage: after a step, with a checkpoint): SIGINT
    and SIGTERM only set a flag the loop reads."""

    def __init__(self) -> None:
        self.signum: int = 0
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._note)

    def _note(self, signum: int, frame) -> None:
        if self.signum:  # asked twice: stop now
            os._exit(128 + signum)
        self.signum = signum

    def requested(self) -> bool:
        return bool(self.signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise RunStopped in the main thread while the block runs (see the module doc)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send this process `signum` when its parent dies (Linux; elsewhere nothing happens): a
    `dvc repro` whose tuneline was killed with `kill -9` stops too."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signum)


# Shells that `dvc repro` may run a stage's command through ($SHELL, else /bin/sh). dash (Debian's /bin/sh) stays
# alive as the stage's parent instead of exec-ing the one command, and outlives a killed dvc.
SHELLS = {"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh", "busybox"}


def _proc_parent(pid: int) -> tuple[str, int]:
    """(name, parent pid) of a process, from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    return name, int(stat[stat.rindex(")") + 2:].split()[1])


def stop_with_owner(signum: int = signal.SIGTERM) -> None:
    """A stage stops (gets `signum`, as from Ctrl-C) when the `dvc repro` that runs it dies, `kill -9` included, so a
    killed run leaves no stage running unowned. The owner is the parent, or the parent's parent when the parent is
    the shell dvc ran the command through: the kernel's parent-death signal covers the first, a thread waiting on
    the owner's pidfd the second (Linux; elsewhere only the parent-death signal, where there is one)."""
    die_with_parent(signum)
    try:
        name, owner = _proc_parent(os.getppid())
        if name not in SHELLS:
            return
        if owner <= 1:  # the shell is already orphaned: the owner is gone
            os.kill(os.getpid(), signum)
            return
        fd = os.pidfd_open(owner)
    except ProcessLookupError:
        os.kill(os.getpid(), signum)
        return
    except (OSError, ValueError, AttributeError):
        return  # no /proc or no pidfd here: the parent-death signal is all there is

    def wait_for_owner() -> None:
        select.select([fd], [], [])  # readable once the owner has exited
        os.kill(os.getpid(), signum)

    threading.Thread(target=wait_for_owner, name="stop-with-owner", daemon=True).start()


def ignore_terminal_interrupt() -> None:
    """For a child process its parent stops (SIGTERM) as it shuts down, e.g. the model server's LitServe workers and
    traffic logger: Ctrl-C reaches every process of the terminal's group, and ignoring it here keeps the stop to the
    parent's one line instead of a KeyboardInterrupt traceback per process."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the process's main thread: nothing to set
        pass

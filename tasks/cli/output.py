"""The CLI's consoles and its rule for expected failures: bad params, bad data, a busy project or a refused change
print one line and exit 2, with no traceback (and Prefect does not retry a stage that exited so)."""
from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.text import Text

from tasks.checks import ValidationFailed
from tasks.config import ConfigError
from tasks.files.tables import DataFileError
from tasks.files.weights import WeightsMismatch
from tasks.monitoring.batches import BatchRejected
from tasks.orchestration.locking import ProjectBusy
from tasks.orchestration.pipeline import USER_ERROR_EXIT, DvcFailed
from tasks.orchestration.storage import StorageError
from tasks.orchestration.server_slot import SlotLost
from tasks.orchestration.signals import RunStopped
from tasks.orchestration.sweep import SweepFailed
from tasks.redaction import redact
from tasks.registry.store import RegistryError
from tasks.stages.prepare import PrepareFailed

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXPECTED = (ConfigError, DataFileError, ValidationFailed, RegistryError, FileNotFoundError, BatchRejected, ProjectBusy,
            PrepareFailed, SweepFailed, StorageError, DvcFailed, WeightsMismatch, SlotLost)


def user_errors(fn):
    """Expected failures: one clear line and exit 2. A run stopped by Ctrl-C or SIGTERM: one line, exit 130 / 143."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EXPECTED as exc:
            err.print(Text.assemble(("tuneline: error: ", "bold red"), redact(str(exc))))
            raise typer.Exit(USER_ERROR_EXIT)
        except RunStopped as stop:
            err.print(Text.assemble((f"tuneline: stopped by {stop}", "bold"),
                                    ": the running stage was stopped, the project lock and the server-wide slot are "
                                    "released; the next run resumes from the last checkpoint"))
            raise typer.Exit(stop.exit_code)
    return wrapper


def say(text: str) -> None:
    """One line of output, printed as written (no rich markup or highlighting of user text)."""
    out.print(redact(text), highlight=False, markup=False)

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
from tasks.monitoring.batches import BatchRejected
from tasks.orchestration.locking import ProjectBusy
from tasks.orchestration.pipeline import USER_ERROR_EXIT, DvcFailed
from tasks.orchestration.storage import StorageError
from tasks.orchestration.sweep import SweepFailed
from tasks.registry.store import RegistryError
from tasks.stages.prepare import PrepareFailed

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXPECTED = (ConfigError, DataFileError, ValidationFailed, RegistryError, FileNotFoundError, BatchRejected, ProjectBusy,
            PrepareFailed, SweepFailed, StorageError, DvcFailed)


def user_errors(fn):
    """Expected failures: one clear line and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EXPECTED as exc:
            err.print(Text.assemble(("tuneline: error: ", "bold red"), str(exc)))
            raise typer.Exit(USER_ERROR_EXIT)
    return wrapper


def say(text: str) -> None:
    """One line of output, printed as written (no rich markup or highlighting of user text)."""
    out.print(text, highlight=False, markup=False)

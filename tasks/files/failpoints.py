"""Crash injection for tests: a named step at which this process kills itself with SIGKILL (no cleanup, no finally
blocks), when the environment names that step. The steps are where a real crash would hurt: between writing a file
aside and renaming it into place, between a registry's steps."""
from __future__ import annotations

import os
import signal

FAILPOINT = "TUNELINE_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT) == name:
        os.kill(os.getpid(), signal.SIGKILL)

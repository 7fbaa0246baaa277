"""Shared artifact storage: a DVC remote (S3-compatible or a directory) for data, models and the registry.

DVC does the work (`dvc remote add`, `dvc push`, `dvc pull`); this module only configures it and pushes after a
gate decision when a default remote is set. On a fresh clone, tasks/changes.py:pull restores the production link from
the registry's event log (the link itself is machine-local and not versioned).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

from tasks.orchestration.pipeline import run_dvc, tool_env
from tasks.orchestration.server_slot import confirm_slots


class StorageError(RuntimeError):
    """No remote to push to (DVC's own failures raise pipeline.DvcFailed, naming the command)."""


def add_remote(project_dir: str | Path, url: str, name: str = "storage", endpoint_url: Optional[str] = None) -> None:
    """`dvc remote add --default NAME URL` (replacing one of that name), plus the endpoint of an S3-compatible
    store that is not AWS (MinIO, Ceph, moto, ...). Credentials come from the usual AWS variables or files."""
    run_dvc(["remote", "add", "--force", "--default", name, url], project_dir, capture=True)
    # DVC re-hashes what it downloads and refuses a file whose hash differs from the .dvc/dvc.lock record.
    run_dvc(["remote", "modify", name, "verify", "true"], project_dir, capture=True)
    if endpoint_url:
        run_dvc(["remote", "modify", name, "endpointurl", endpoint_url], project_dir, capture=True)


def default_remote(project_dir: str | Path) -> Optional[str]:
    # `dvc remote default` exits non-zero when none is set: that is an answer here, not a failure.
    proc = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=project_dir, env=tool_env(),
                          capture_output=True, text=True)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name and "No default remote" not in name else None


def push(project_dir: str | Path) -> Optional[str]:
    """`dvc push` of every DVC-tracked output (data, candidate, registry) to the default remote; None if unset."""
    remote = default_remote(project_dir)
    if remote is None:
        return None
    confirm_slots()  # a flow run that lost its server-wide slot never pushes
    out = run_dvc(["push"], project_dir, capture=True).strip().splitlines()
    return f"dvc push -> {remote}: {out[-1] if out else 'done'}"


def pull(project_dir: str | Path) -> str:
    """`dvc pull` from the default remote (tasks/changes.py:pull then restores the production link)."""
    out = run_dvc(["pull"], Path(project_dir).resolve(), capture=True).strip().splitlines()
    return f"dvc pull: {out[-1] if out else 'done'}"

"""Shared artifact storage: a DVC remote (S3-compatible or a directory) for data, models and the registry.

DVC does the work (`dvc remote add`, `dvc push`, `dvc pull`); this module only configures it, pushes after a
promotion when a default remote is set, and restores the production link on a fresh clone from the registry's event
log (the link itself is machine-local and not versioned).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

from tasks.orchestration.pipeline import tool_env


class StorageError(RuntimeError):
    """A DVC remote command failed; the message carries DVC's own output."""


def dvc(args: list[str], project_dir: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project_dir, env=tool_env(), capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise StorageError(f"dvc {' '.join(args)} failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout)[-3000:]}")
    return proc


def add_remote(project_dir: str | Path, url: str, name: str = "storage", endpoint_url: Optional[str] = None) -> None:
    """`dvc remote add --default NAME URL` (replacing one of that name), plus the endpoint of an S3-compatible
    store that is not AWS (MinIO, Ceph, moto, ...). Credentials come from the usual AWS variables or files."""
    dvc(["remote", "add", "--force", "--default", name, url], project_dir)
    if endpoint_url:
        dvc(["remote", "modify", name, "endpointurl", endpoint_url], project_dir)


def default_remote(project_dir: str | Path) -> Optional[str]:
    proc = dvc(["remote", "default"], project_dir, check=False)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name and "No default remote" not in name else None


def push(project_dir: str | Path) -> Optional[str]:
    """`dvc push` of every DVC-tracked output (data, candidate, registry) to the default remote; None if unset."""
    remote = default_remote(project_dir)
    if remote is None:
        return None
    out = dvc(["push"], project_dir).stdout.strip().splitlines()
    return f"dvc push -> {remote}: {out[-1] if out else 'done'}"


def pull(project_dir: str | Path) -> list[str]:
    """`dvc pull` from the default remote, then the production link from the registry's event log."""
    from tasks.paths import ProjectPaths
    from tasks.registry.store import Registry

    root = Path(project_dir).resolve()
    out = dvc(["pull"], root).stdout.strip().splitlines()
    paths = ProjectPaths(root)
    return [f"dvc pull: {out[-1] if out else 'done'}", *Registry(paths.registry, paths.production).repair()]

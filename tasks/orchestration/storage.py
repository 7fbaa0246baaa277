"""Shared artifact storage: a DVC remote (S3-compatible or a directory) for data, models and the registry.

DVC does the work (`dvc remote add`, `dvc push`, `dvc pull`); this module only configures it and pushes after a
gate decision when a default remote is set. On a fresh clone, tasks/changes.py:pull restores the production link from
the registry's event log (the link itself is machine-local and not versioned).

Which registry version is the team's latest lives in git (models/registry.dvc), and a run does not commit. So a push
also writes that pointer into the remote itself (REGISTRY_HEAD), and a pull, or a model server following the remote,
takes the registry from there: replicas on other machines see a promotion as soon as it is pushed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

from tasks.orchestration.pipeline import run_dvc, tool_env
from tasks.redaction import redact
from tasks.orchestration.server_slot import confirm_slots


REGISTRY_POINTER = "models/registry.dvc"
REGISTRY_HEAD = "tuneline/registry.dvc"  # in the remote: the pointer of the registry the last gate pushed


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
    publish_registry_head(project_dir)
    return f"dvc push -> {remote}: {out[-1] if out else 'done'}"


def pull(project_dir: str | Path) -> str:
    """`dvc pull` from the default remote (tasks/changes.py:pull then restores the production link)."""
    out = run_dvc(["pull"], Path(project_dir).resolve(), capture=True).strip().splitlines()
    return f"dvc pull: {out[-1] if out else 'done'}"


def remote_location(project_dir: str | Path):
    """The default remote's filesystem and root path, as DVC itself opens them (credentials and endpoint included)."""
    from dvc.repo import Repo

    with Repo(str(Path(project_dir).resolve())) as repo:
        remote = repo.cloud.get_remote()
    return remote.fs, remote.path


def publish_registry_head(project_dir: str | Path) -> None:
    """Write this clone's registry pointer into the remote, after its files were pushed."""
    pointer = Path(project_dir) / REGISTRY_POINTER
    if not pointer.exists():
        return
    fs, root = remote_location(project_dir)
    head = fs.join(root, REGISTRY_HEAD)
    fs.makedirs(fs.parent(head), exist_ok=True)
    fs.pipe_file(head, pointer.read_bytes())


def remote_registry_head(location) -> Optional[bytes]:
    """The registry pointer the remote's last push recorded, or None before any push. `location`: remote_location()."""
    fs, root = location
    head = fs.join(root, REGISTRY_HEAD)
    return fs.cat_file(head) if fs.exists(head) else None


def new_registry_head(project_dir: str | Path, location) -> Optional[bytes]:
    """The remote's registry pointer when it differs from this clone's (one small read, no `dvc` process); None when
    the remote has none yet or this clone has it already. `location`: remote_location()."""
    wanted = remote_registry_head(location)
    pointer = Path(project_dir) / REGISTRY_POINTER
    if wanted is None or (pointer.exists() and pointer.read_bytes() == wanted):
        return None
    return wanted


def adopt_registry_head(project_dir: str | Path, location=None) -> Optional[str]:
    """The remote's registry pointer, when it differs from this clone's: written here and its files pulled. Returns
    what was done, or None when there is no remote head or this clone has it already."""
    wanted = new_registry_head(project_dir, location or remote_location(project_dir))
    if wanted is None:
        return None
    pointer = Path(project_dir) / REGISTRY_POINTER
    pointer.write_bytes(wanted)
    run_dvc(["pull", REGISTRY_POINTER], Path(project_dir).resolve(), capture=True)
    return redact(f"registry: took the version the remote's last push recorded ({REGISTRY_HEAD})")

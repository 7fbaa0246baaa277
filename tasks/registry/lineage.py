"""Where a model came from: DVC data hashes (from dvc.lock) and the git commit of the code."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

CODE_PATHS = ("tasks", "flows", "pyproject.toml", "dvc.yaml")  # params are recorded on their own
TRACED_OUTPUTS = {"validated_data": "data/validated/dataset.parquet", "processed_data": "data/processed"}


def data_hashes(project_dir: str | Path) -> dict[str, str]:
    lock = Path(project_dir) / "dvc.lock"
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    by_path = {o["path"]: o.get("md5") for s in stages.values() for o in s.get("outs", [])}
    return {name: by_path[path] for name, path in TRACED_OUTPUTS.items() if by_path.get(path)}


def code_commit(project_dir: str | Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    # Modified code makes a run "dirty"; params (recorded in full), data and reports do not.
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)) if commit else None
    return {"commit": commit or None, "dirty": dirty}

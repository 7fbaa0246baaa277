"""Deployments served by `tuneline serve` (or `python -m flows.deployments PROJECT_DIR`)."""
from __future__ import annotations

import sys
from pathlib import Path

from prefect import serve

from flows.training import training


def build(project_dir: str | Path):
    project_dir = str(Path(project_dir).resolve())
    return [training.to_deployment(name="default", parameters={"project_dir": project_dir},
                                   description="Manual training run: DVC stages prepare..evaluate")]


def main() -> None:
    serve(*build(sys.argv[1] if len(sys.argv) > 1 else "."))


if __name__ == "__main__":
    main()

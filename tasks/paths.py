"""Project-relative locations the flows use; dvc.yaml names the same stage outputs (keep them in step)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class Under:
    """A path below the project root, read as an attribute: `paths.registry` is `paths.root / "models/registry"`."""

    def __init__(self, relative: str):
        self.relative = relative

    def __get__(self, paths: "ProjectPaths | None", owner: type) -> Path:
        return paths.root / self.relative if paths is not None else Path(self.relative)


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    params = Under("params.yaml")
    processed = Under("data/processed")
    candidate = Under("models/candidate")
    metrics = Under("reports/metrics.json")
    reference = Under("data/reference/profile.parquet")
    batches = Under("data/batches")
    incoming = Under("data/incoming")
    monitoring_reports = Under("reports/monitoring")
    registry = Under("models/registry")
    production = Under("models/production")

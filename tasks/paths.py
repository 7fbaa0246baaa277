"""Project-relative locations the flows use; dvc.yaml names the same stage outputs (keep them in step)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def processed(self) -> Path:
        return self.root / "data/processed"

    @property
    def candidate(self) -> Path:
        return self.root / "models/candidate"

    @property
    def metrics(self) -> Path:
        return self.root / "reports/metrics.json"

    @property
    def reference(self) -> Path:
        return self.root / "data/reference/profile.parquet"

    @property
    def batches(self) -> Path:
        return self.root / "data/batches"

    @property
    def incoming(self) -> Path:
        return self.root / "data/incoming"

    @property
    def monitoring_reports(self) -> Path:
        return self.root / "reports/monitoring"

    @property
    def registry(self) -> Path:
        return self.root / "models/registry"

    @property
    def production(self) -> Path:
        return self.root / "models/production"

"""Taking batch files in: given files, or every file in the drop folder; each is ingested (tasks/changes.py) and
drift-checked against production (tasks/monitoring/monitor.py), and a drop file is then filed away to done/ or
rejected/ beside it, so it is never taken twice."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from tasks import changes
from tasks.config import Params
from tasks.files.tables import SUFFIX_FORMATS, write_text
from tasks.monitoring.batches import BatchRejected, BatchStore
from tasks.monitoring.monitor import BatchOutcome, check_batch, production_reference, stored_unchecked
from tasks.paths import ProjectPaths
from tasks.registry.store import Registry


def drop_files(drop_dir: Path) -> list[Path]:
    if not drop_dir.exists():
        return []
    return sorted(p for p in drop_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIX_FORMATS)


def file_away(file: Path, outcome: BatchOutcome) -> None:
    """Move a processed drop file to done/ or rejected/ (with the reason beside it), so it is not taken twice."""
    target = file.parent / ("rejected" if outcome.rejected else "done")
    target.mkdir(exist_ok=True)
    shutil.move(str(file), target / file.name)
    if outcome.rejected:
        write_text(outcome.rejected + "\n", target / f"{file.name}.reason.txt")


def files_to_process(paths: ProjectPaths, drop_dir: Optional[str | Path],
                     files: Optional[list[str | Path]]) -> tuple[list[Path], bool]:
    """Given files, or every batch file in the drop folder; the flag says whether they are drop files."""
    if files:
        return [Path(f) for f in files], False
    return drop_files(Path(drop_dir) if drop_dir else paths.incoming), True


def process_file(params: Params, paths: ProjectPaths, file: Path, from_drop: bool = False) -> BatchOutcome:
    """One batch file end to end: validate and store (versioned with DVC), drift check, decision, reports."""
    store, registry = BatchStore(paths.batches), Registry(paths.registry, paths.production)
    production_reference(registry)  # fail before storing anything when there is nothing to compare with
    try:
        _, outcome = changes.ingest(paths.root, file, params, stored=stored_unchecked(store, paths.monitoring_reports,
                                                                                      Path(file)),
                                    meanwhile=lambda batch: check_batch(params, store, registry, batch,
                                                                        paths.monitoring_reports))
    except BatchRejected as exc:
        outcome = BatchOutcome(str(file), rejected=str(exc))
    if from_drop:
        file_away(Path(file), outcome)
    return outcome

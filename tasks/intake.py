"""Taking batch files in: given files, or every file in the drop folder; each is ingested (tasks/changes.py) and
drift-checked against production (tasks/monitoring/monitor.py), and a drop file is then filed away to done/ or
rejected/ beside it, so it is never taken twice."""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from tasks import changes
from tasks.config import Params
from tasks.files.tables import SUFFIX_FORMATS, DataFileError, write_text
from tasks.monitoring.batches import BatchRejected, BatchStore
from tasks.monitoring.monitor import BatchOutcome, check_batch, production_reference, stored_unchecked
from tasks.paths import ProjectPaths
from tasks.registry.store import Registry

log = logging.getLogger("tuneline.intake")


class UnsafeDropFolder(DataFileError):
    """A folder the drop folder's files would move into is a link or not a folder: nothing is moved there."""


def drop_files(drop_dir: Path) -> list[Path]:
    """Every entry of the drop folder with a batch file's suffix: regular files, and links and other non-files too,
    which are refused one by one without being read."""
    if not drop_dir.is_dir():
        return []
    return sorted(p for p in drop_dir.iterdir() if p.suffix.lower() in SUFFIX_FORMATS and (p.is_symlink() or
                                                                                         not p.is_dir()))


def not_a_regular_file(file: Path) -> Optional[str]:
    """Why a drop-folder entry is refused before it is opened: a link (it could name any file on the machine) or
    something that is not a regular file (a FIFO, a device)."""
    if file.is_symlink():
        return f"{file.name}: a symbolic link; the drop folder takes regular files only, links are never followed " \
               "(rule: symlink)"
    if not file.is_file():
        return f"{file.name}: not a regular file (rule: not_a_file)"
    return None


def safe_folder(folder: Path) -> Path:
    """done/, rejected/ or failed/ beside the drop files: made if missing, refused if it is a link or not a folder."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UnsafeDropFolder(f"{folder}: is a link or not a folder; tuneline moves drop files only into real "
                               "folders inside the drop folder: remove it")
    folder.mkdir(exist_ok=True)
    return folder


def unique_name(folder: Path, name: str) -> Path:
    """`name` in `folder`, or with the time (and a counter) before its suffix when that name is taken."""
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = folder / f"{stem}.{stamp}{f'-{n}' if n > 1 else ''}{suffix}"
    return target


def file_away(file: Path, outcome: BatchOutcome) -> Path:
    """Move a processed drop file (a link as a link) to done/, rejected/ or failed/, under a name no earlier file
    has, with the reason beside a refused one, so it is never taken twice."""
    folder = safe_folder(file.parent / ("failed" if outcome.failed else "rejected" if outcome.rejected else "done"))
    target = unique_name(folder, file.name)
    os.rename(file, target)  # a rename moves a link itself, never what it points to
    if outcome.rejected:
        write_text(outcome.rejected + "\n", target.with_name(target.name + ".reason.txt"))
    return target


def files_to_process(paths: ProjectPaths, drop_dir: Optional[str | Path],
                     files: Optional[list[str | Path]]) -> tuple[list[Path], bool]:
    """Given files, or every batch file in the drop folder; the flag says whether they are drop files."""
    if files:
        return [Path(f) for f in files], False
    return drop_files(Path(drop_dir) if drop_dir else paths.incoming), True


def process_file(params: Params, paths: ProjectPaths, file: Path, from_drop: bool = False) -> BatchOutcome:
    """One batch file end to end: validate and store (versioned with DVC), drift check, decision, reports.

    A drop file always leaves the drop folder: to done/, to rejected/ (with the reason), or, when reading or checking
    it crashed, to failed/ (with the error), so no scheduled run trips over the same file again."""
    store, registry = BatchStore(paths.batches), Registry(paths.registry, paths.production)
    production_reference(registry)  # fail before storing anything when there is nothing to compare with
    file = Path(file)
    refused = not_a_regular_file(file) if from_drop else None
    try:
        if refused:
            raise BatchRejected(refused)
        _, outcome = changes.ingest(paths.root, file, params, stored=stored_unchecked(store, paths.monitoring_reports,
                                                                                      file),
                                    meanwhile=lambda batch: check_batch(params, store, registry, batch,
                                                                        paths.monitoring_reports))
    except BatchRejected as exc:
        outcome = BatchOutcome(str(file), rejected=str(exc))
    except Exception as exc:
        if not from_drop:
            raise
        log.exception("%s: failed; moved to failed/", file.name)
        outcome = BatchOutcome(str(file), rejected=f"{file.name}: failed with {type(exc).__name__}: {exc}; moved to "
                                                   "failed/ (drop it again to retry)", failed=True)
    if from_drop:
        file_away(file, outcome)
    return outcome

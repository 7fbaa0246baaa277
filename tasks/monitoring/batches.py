"""Accepted batches of new data: validated against the training schema and label set, stored immutably.

Layout (default data/batches, versioned with `dvc add`):
    <id>/batch.parquet     accepted rows as the kind's canonical columns [+label], row, plus the file's other columns
    <id>/quarantine.csv    rows a row-level rule rejected (row, rule, detail)
    <id>/validation.json   the validation report
    <id>/meta.json         source file, its sha256, rows, labelled, ingested time
The id is `b<NNNN>-<sha8 of the source file>`: a file is ingested once, and a batch id names its content, so the
training pool can be a list of ids in params.yaml (`data.batches`) that DVC tracks like any param.
A rejected batch raises before anything is written: every earlier batch, the pool and production stay as they were.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from tasks import checks
from tasks.config import BATCH_ID, DataConfig, ValidateConfig
from tasks.files.digest import file_sha256
from tasks.files.tables import DataFileError, spreadsheet_csv, write_parquet, write_text
from tasks.kinds import get_kind
from tasks.kinds.base import ORIGIN, ROW, Kind, TokenBudget, is_labelled
from tasks.registry.store import now

BATCH_FILE = "batch.parquet"


class BatchRejected(ValueError):
    """The batch cannot be accepted; the message names the file and the rule."""


@dataclass(frozen=True)
class BatchInfo:
    id: str
    source: str
    sha256: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    labelled: bool
    ingested: str
    note: str = ""  # e.g. why a batch is unlabelled (its label column was not found)
    kind: str = "text-classification"  # the task kind whose rows it holds (batches stored before kinds: text)

    @property
    def labelled_rows(self) -> int:
        return self.rows_accepted if self.labelled else 0


@dataclass(frozen=True)
class BatchStore:
    root: Path

    def batches(self) -> list[BatchInfo]:
        if not self.root.exists():
            return []
        metas = sorted(self.root.glob("b*/meta.json"))
        return [BatchInfo(**json.loads(m.read_text(encoding="utf-8"))) for m in metas]

    def get(self, batch_id: str) -> BatchInfo:
        if not re.fullmatch(BATCH_ID, batch_id):  # an id is joined into a path: only what ingest names a batch
            raise BatchRejected(f"{batch_id!r} is not a batch id (b<NNNN>-<8 hex digits>)")
        meta = self.root / batch_id / "meta.json"
        if not meta.exists():
            raise FileNotFoundError(f"batch {batch_id!r} is not in {self.root}")
        return BatchInfo(**json.loads(meta.read_text(encoding="utf-8")))

    def rows(self, batch_id: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / batch_id / BATCH_FILE)

    def find(self, path: str | Path) -> Optional[BatchInfo]:
        """The stored batch with this file's content, if any."""
        return self._with_sha256(file_sha256(Path(path)))

    def _with_sha256(self, sha: str) -> Optional[BatchInfo]:
        return next((b for b in self.batches() if b.sha256 == sha), None)

    def pending_labelled(self, pool: Iterable[str], kind: str = "text-classification") -> list[BatchInfo]:
        """Labelled batches of this task kind not yet in the training pool, oldest first."""
        pool = set(pool)
        return [b for b in self.batches() if b.labelled and b.id not in pool and b.kind == kind]

    def ingest(self, path: str | Path, data_cfg: DataConfig, validate_cfg: ValidateConfig,
               known_labels: Optional[list[str]], kind: Kind | str = "text-classification",
               budget: Optional[TokenBudget] = None) -> BatchInfo:
        """Validate `path` against the training schema and labels; store it if accepted, else raise BatchRejected."""
        path = Path(path)
        if not path.is_file():
            raise BatchRejected(f"{path}: a batch is one file (CSV/Parquet/JSONL; CoNLL for tokens; for images a "
                                "CSV/Parquet of image paths)" if path.exists() else f"{path}: file not found")
        sha = file_sha256(path)
        stored = self._with_sha256(sha)
        if stored is not None:
            raise BatchRejected(f"{path}: already ingested as batch {stored.id} (same content)")
        kind = get_kind(kind)
        # A batch is a sample of new traffic: unlabelled batches are welcome for monitoring.
        try:
            df = kind.read_file(path, data_cfg)
        except DataFileError as exc:
            raise BatchRejected(str(exc)) from None
        labelled = is_labelled(kind, df)
        note = "" if labelled else unlabelled_note(df, kind, data_cfg)
        try:
            outcome = checks.check(df if labelled else df.drop(columns=[kind.label_column], errors="ignore"), data_cfg,
                                     validate_cfg, str(path), known_labels=known_labels, labelled=labelled,
                                     require_classes=False, kind=kind, budget=budget)
        except checks.ValidationFailed as exc:
            raise BatchRejected(str(exc)) from None
        batch_id = f"b{len(self.batches()) + 1:04d}-{sha[:8]}"
        info = BatchInfo(batch_id, str(path), sha, outcome.report.rows_in, outcome.report.rows_accepted,
                         outcome.report.rows_quarantined, bool(labelled), now(), note, kind.name)
        tmp = self.root / f".{batch_id}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_parquet(outcome.accepted, tmp / BATCH_FILE)
        write_text(spreadsheet_csv(outcome.quarantine), tmp / "quarantine.csv")
        write_text(outcome.report.to_json(), tmp / "validation.json")
        write_text(json.dumps(asdict(info), indent=2) + "\n", tmp / "meta.json")
        os.replace(tmp, self.root / batch_id)  # all or nothing
        return info


def unlabelled_note(df: pd.DataFrame, kind: Kind, data_cfg: DataConfig) -> str:
    """Why a batch counts as unlabelled, in words a user can act on."""
    canonical, key, configured = kind.required_columns(data_cfg, labelled=True)[-1]
    if canonical in df.columns:
        return f"column {configured!r} ({key}) has no values: stored unlabelled (monitored, not used for retraining)"
    present = ", ".join(df.attrs.get("source_columns") or [str(c) for c in df.columns if c != ROW])
    return (f"the configured label column {configured!r} ({key}) was not found (columns: {present}): stored "
            "unlabelled, so it is monitored for drift but not used for retraining")


def pool_frames(store: BatchStore, pool: Iterable[str], kind: Kind | str = "text-classification") -> list[pd.DataFrame]:
    """The labelled rows of each batch in the training pool, tagged with the batch id as their origin."""
    kind = get_kind(kind)
    frames = []
    for batch_id in pool:
        info = store.get(batch_id)
        if not info.labelled:
            raise BatchRejected(f"data.batches: batch {batch_id} has no labels and cannot join the training pool")
        if info.kind != kind.name:  # the project switched kinds: that pool waits for its own kind's runs
            continue
        frames.append(store.rows(batch_id)[[*kind.columns, ROW]].assign(**{ORIGIN: batch_id}))
    return frames


def other_kind_batches(store: BatchStore, pool: Iterable[str], kind: str) -> list[str]:
    """Pool entries of another task kind, which a run of `kind` leaves out (and says so)."""
    return [b for b in pool if store.get(b).kind != kind]

"""Stage `prepare`: bring the configured source (the kind's embedded default or a user file) into data/raw as the
kind's canonical rows, then the labelled rows of every batch in the training pool (`data.batches`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.config import DataConfig
from tasks.files.tables import write_parquet
from tasks.kinds import get_kind
from tasks.kinds.base import ORIGIN, SOURCE_ORIGIN, Kind
from tasks.monitoring.batches import BatchStore, pool_frames


@dataclass(frozen=True)
class PrepareResult:
    source: str
    output: Path
    rows_in: int
    rows_out: int


def run(cfg: DataConfig, output: str | Path, batches_dir: str | Path = "data/batches",
        kind: Kind | str = "text-classification") -> PrepareResult:
    kind = get_kind(kind)
    source = kind.read_source(cfg)
    out = source.assign(**{ORIGIN: SOURCE_ORIGIN})
    if cfg.batches:
        out = pd.concat([out, *pool_frames(BatchStore(Path(batches_dir)), cfg.batches, kind)], ignore_index=True)
    write_parquet(out, output)
    rows_in = int(source.attrs.get("rows_read", len(source)))
    return PrepareResult(source=kind.source_label(cfg), output=Path(output), rows_in=rows_in, rows_out=len(out))

"""Stage `prepare`: bring the configured source (the kind's embedded default or a user file) into data/raw as the
kind's canonical rows, then the labelled rows of every batch in the training pool (`data.batches`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config import DataConfig
from tasks.files.tables import write_parquet
from tasks.kinds import get_kind
from tasks.kinds.base import ORIGIN, SOURCE_ORIGIN, Kind
from tasks.monitoring.batches import BatchStore, other_kind_batches, pool_frames


@dataclass(frozen=True)
class PrepareResult:
    source: str
    output: Path
    rows_in: int
    rows_out: int
    removed_by: dict = field(default_factory=dict)  # param key -> rows that filter removed
    other_kind_batches: list = field(default_factory=list)  # pool batches of another task kind, left out

    def filtered(self) -> str:
        said = [f"{n} removed by {key}" for key, n in self.removed_by.items() if n]
        if self.other_kind_batches:
            said.append(f"data.batches {', '.join(self.other_kind_batches)} hold another task kind's rows: left out")
        return "; ".join(said)


class PrepareFailed(ValueError):
    """The configured source gives no rows to train on; the message names the param that removed them."""


def run(cfg: DataConfig, output: str | Path, batches_dir: str | Path = "data/batches",
        kind: Kind | str = "text-classification") -> PrepareResult:
    kind = get_kind(kind)
    source = kind.read_source(cfg)
    rows_in, removed = int(source.attrs.get("rows_read", len(source))), source.attrs.get("removed_by", {})
    if rows_in and not len(source) and any(removed.values()):
        culprit = next(key for key, n in removed.items() if n)
        raise PrepareFailed(f"{kind.source_label(cfg)}: {culprit} removed all {rows_in} rows "
                            f"({'; '.join(f'{k}: {n}' for k, n in removed.items() if n)}); change it, or set it to null")
    out = source.assign(**{ORIGIN: SOURCE_ORIGIN})
    left_out: list[str] = []
    if cfg.batches:
        store = BatchStore(Path(batches_dir))
        out = pd.concat([out, *pool_frames(store, cfg.batches, kind)], ignore_index=True)
        left_out = other_kind_batches(store, cfg.batches, kind.name)
    write_parquet(out, output)
    return PrepareResult(source=kind.source_label(cfg), output=Path(output), rows_in=rows_in, rows_out=len(out),
                         removed_by={k: int(n) for k, n in removed.items()}, other_kind_batches=left_out)

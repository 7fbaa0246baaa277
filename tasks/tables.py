"""Read and write the tabular files users bring (CSV, Parquet, JSONL) with pandas/pyarrow."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class DataFileError(ValueError):
    """A data file cannot be used; the message names the file (and column/row where known)."""


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataFileError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; set data.format") from None


def read_table(path: str | Path, fmt: str = "auto", encoding: str | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    fmt = detect_format(path, fmt)
    try:
        if fmt == "csv":
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            return pd.read_csv(path, sep=sep, encoding=encoding or "utf-8", dtype=str, keep_default_na=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False, encoding=encoding or "utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not decodable as {encoding or 'utf-8'} ({exc.reason} at byte {exc.start}); "
                            "set data.encoding") from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot parse as {fmt}: {exc}") from None


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path

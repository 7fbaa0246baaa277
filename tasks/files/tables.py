"""Read and write the tabular files users bring (CSV, Parquet, JSONL) with pandas/pyarrow.

CSV quoting (commas, quotes and newlines inside fields) is the parser's job; this module adds encoding and delimiter
detection, size limits, and error messages that name the file and, where the parser knows it, the line.
"""
from __future__ import annotations

import csv
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.files.failpoints import failpoint

SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
                  ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
SNIFF_BYTES = 8 * 1024  # csv.Sniffer's regexes are quadratic in the sample: a crafted 8 KiB took 0.39 s
TERMINATOR_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
# A cell that starts with one of these becomes a formula when a spreadsheet opens the CSV (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class DataFileError(ValueError):
    """A data file cannot be used; the message names the file (and column/row where known)."""


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataFileError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; set data.format") from None


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as such; otherwise charset-normalizer's best guess."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        return "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
    except UnicodeDecodeError as exc:
        from charset_normalizer import from_bytes

        matches = from_bytes(raw[: 4 * 1024 * 1024])
        best = matches.best()
        if best is None:
            raise DataFileError(f"{path}: not valid UTF-8 ({_where(raw, exc.start)}) and no other encoding fits; "
                                "set data.encoding") from None
        # Short Western-European files are ambiguous among the cp125x family: prefer cp1252 when it fits as well.
        western = [m for m in matches if m.encoding in ("cp1252", "latin_1") and m.percent_chaos <= best.percent_chaos]
        return western[0].encoding if western else best.encoding


def _where(raw: bytes, offset: int) -> str:
    line = raw[:offset].count(b"\n") + 1
    return f"line {line}, byte {offset}"


def _decode_error(path: Path, encoding: str) -> str:
    """pandas reports offsets within its read buffer; decode the file ourselves to name the real line and byte."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return f"{path}: not decodable as {encoding} ({exc.reason} at {_where(raw, exc.start)}); set data.encoding"
    return f"{path}: not decodable as {encoding}; set data.encoding"


def detect_delimiter(path: Path, encoding: str) -> str:
    with path.open("r", encoding=encoding, errors="replace", newline="") as fh:
        sample = fh.read(SNIFF_BYTES)
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return "\t" if path.suffix.lower() == ".tsv" else ","


def line_terminator(path: Path) -> Optional[str]:
    """"\n" for LF files, so a bare carriage return inside a field (tweets have them; pandas writes them unquoted)
    stays text instead of ending the row; CRLF files keep the parser's default."""
    with path.open("rb") as fh:
        sample = fh.read(TERMINATOR_BYTES)
    return None if b"\r\n" in sample else "\n"


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    try:
        return pd.read_json(path, lines=True, dtype=False, encoding=encoding)
    except ValueError:
        # pandas does not say which line is broken: find it so the user can fix it.
        with path.open(encoding=encoding) as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataFileError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
                    except RecursionError:
                        raise DataFileError(f"{path}: line {number} is nested too deeply to read as a row") from None
        raise


def check_parquet_size(path: Path, max_bytes: Optional[int], max_rows: Optional[int]) -> None:
    """Rows and uncompressed bytes from the file's own metadata, refused before a byte of data is read: a small
    compressed file can hold billions of rows."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow's errors name the problem, never the data
        raise DataFileError(f"{path}: not a readable Parquet file: {exc}") from None
    if max_rows is not None and meta.num_rows > max_rows:
        raise DataFileError(f"{path}: {meta.num_rows:,} rows (Parquet metadata) exceeds data.max_rows={max_rows:,}")
    uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if max_bytes is not None and uncompressed > max_bytes:
        raise DataFileError(f"{path}: {uncompressed:,} bytes uncompressed (Parquet metadata) exceeds "
                            f"data.max_bytes={max_bytes:,}")


def read_table(path: str | Path, fmt: str = "auto", encoding: Optional[str] = None, delimiter: Optional[str] = None,
               max_bytes: Optional[int] = None, max_rows: Optional[int] = None) -> pd.DataFrame:
    """A user's CSV/Parquet/JSONL file as a DataFrame (CSV cells as strings). Size limits are checked before the
    data is read; every failure is a DataFileError naming the file, and the line where the parser knows it."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DataFileError(f"{path}: {size:,} bytes exceeds data.max_bytes={max_bytes:,}")
    if size == 0:
        raise DataFileError(f"{path}: file is empty (rule: empty file)")
    fmt = detect_format(path, fmt)
    try:
        if fmt == "parquet":
            check_parquet_size(path, max_bytes, max_rows)
            df = pd.read_parquet(path)
        else:
            encoding = encoding or detect_encoding(path)
            if fmt == "jsonl":
                df = _read_jsonl(path, encoding)
            else:
                sep = delimiter or detect_delimiter(path, encoding)
                df = pd.read_csv(path, sep=sep, encoding=encoding, dtype=str, keep_default_na=False,
                                 lineterminator=line_terminator(path))
    except UnicodeDecodeError:
        raise DataFileError(_decode_error(path, encoding)) from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path}: file has no header and no rows (rule: empty file)") from None
    except DataFileError:
        raise
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataFileError(f"{path}: cannot parse as {fmt}: {exc}") from None
    if max_rows is not None and len(df) > max_rows:
        raise DataFileError(f"{path}: {len(df):,} rows exceeds data.max_rows={max_rows:,}")
    return df


def csv_text(df: pd.DataFrame) -> str:
    """CSV with every field quoted: pandas leaves a bare carriage return (common in tweets) unquoted by default and
    then cannot parse its own file. For data files tuneline reads back; see `spreadsheet_csv` for reports."""
    return df.to_csv(index=False, quoting=csv.QUOTE_ALL)


def defuse_formula(value):
    """A text cell a spreadsheet would run as a formula, prefixed with ' (OWASP's advice): shown, never evaluated."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def spreadsheet_csv(df: pd.DataFrame) -> str:
    """CSV for people (the quarantine file, predictions): text cells that start with = + - @ (or a tab or carriage
    return) are prefixed with ', so opening the file in a spreadsheet runs no formula a user's text carried."""
    text_columns = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c])]
    return csv_text(df.assign(**{c: df[c].map(defuse_formula) for c in text_columns}))


def fsync_file(path: Path) -> None:
    """Flush a written file to disk, so a rename that publishes it never points at bytes still in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`, flushed and renamed over it only if the block succeeds: readers never see
    half a file, and a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fsync_file(tmp)
        failpoint(f"before-replace:{path.name}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """CSV, Parquet or JSONL by the path's suffix, written atomically."""
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt == "parquet":
        return write_parquet(df, path)
    if fmt == "jsonl":
        return write_text(df.to_json(orient="records", lines=True, force_ascii=False), path)
    if fmt == "csv":
        return write_text(spreadsheet_csv(df), path)
    raise DataFileError(f"{path}: unknown output format {path.suffix!r}; use .csv, .parquet or .jsonl")

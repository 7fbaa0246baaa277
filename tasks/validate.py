"""Stage `validate`: the data-quality gate between raw data and training.

Dataset-level problems (missing column, too few rows, a single class) raise ValidationFailed before anything is
written, so downstream stages never run. Row-level problems (blank text, missing label) drop the row and are counted.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config import DataConfig, ValidateConfig
from tasks.prepare import LABEL, TEXT
from tasks.tables import write_parquet


class ValidationFailed(ValueError):
    """The dataset cannot be trained on; the message names the file, the column and the rule."""


@dataclass
class ValidationReport:
    source: str
    rows_in: int
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def check(df: pd.DataFrame, data_cfg: DataConfig, cfg: ValidateConfig, source: str) -> tuple[pd.DataFrame, ValidationReport]:
    """Pure check: returns the accepted rows and the report, or raises ValidationFailed."""
    for canonical, key, configured in ((TEXT, "data.text_column", data_cfg.text_column),
                                       (LABEL, "data.label_column", data_cfg.label_column)):
        if canonical not in df.columns:
            present = ", ".join(map(str, df.columns)) or "none"
            raise ValidationFailed(f"{source}: required column {configured!r} ({key}) is missing; "
                                   f"columns present: {present}")
    report = ValidationReport(source=source, rows_in=len(df))
    text = df[TEXT].astype("string").str.strip()
    label = df[LABEL].astype("string").str.strip()
    blank_text = text.isna() | (text == "")
    blank_label = ~blank_text & (label.isna() | (label == ""))
    report.dropped["blank_text"] = int(blank_text.sum())
    report.dropped["blank_label"] = int(blank_label.sum())
    keep = ~(blank_text | blank_label)
    df = df.loc[keep].assign(**{TEXT: df.loc[keep, TEXT].astype(str), LABEL: label[keep].astype(str)})
    if cfg.drop_duplicates:
        dup = df.duplicated(subset=[TEXT], keep="first")
        report.dropped["duplicate_text"] = int(dup.sum())
        df = df.loc[~dup]
    df = df.reset_index(drop=True)

    if len(df) < cfg.min_rows:
        raise ValidationFailed(f"{source}: only {len(df)} usable rows after validation; "
                               f"validate.min_rows requires {cfg.min_rows}")
    counts = df[LABEL].value_counts().sort_index()
    if len(counts) < 2:
        raise ValidationFailed(f"{source}: column {data_cfg.label_column!r} has a single class "
                               f"({', '.join(counts.index)}); training needs at least two")
    rare = counts[counts < cfg.min_rows_per_class]
    if len(rare):
        raise ValidationFailed(f"{source}: column {data_cfg.label_column!r}: classes below "
                               f"validate.min_rows_per_class={cfg.min_rows_per_class}: "
                               + ", ".join(f"{k} ({v})" for k, v in rare.items()))
    report.rows_out = len(df)
    report.class_counts = {str(k): int(v) for k, v in counts.items()}
    return df, report


def run(data_cfg: DataConfig, cfg: ValidateConfig, raw: str | Path, output: str | Path, report_path: str | Path,
        source: str) -> ValidationReport:
    df = pd.read_parquet(raw)
    accepted, report = check(df, data_cfg, cfg, source)  # raises before any output is written
    write_parquet(accepted, output)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(report.to_json(), encoding="utf-8")
    return report

"""Stage `validate`: the data-quality gate between raw data and training (also used for incoming batches).

Row-level rules send a row to quarantine (with its row number, rule and detail) and the rest continue.
Dataset-level rules raise ValidationFailed before anything is written, so downstream stages never run and earlier
outputs stay as they were. Every threshold is a `validate.*` param.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from tasks import quality
from tasks.config import DataConfig, ValidateConfig
from tasks.prepare import LABEL, ROW, TEXT
from tasks.tables import csv_text, write_parquet, write_text

QUARANTINE_COLUMNS = [ROW, "rule", "detail", TEXT, LABEL]


class ValidationFailed(ValueError):
    """The dataset cannot be used; the message names the file, the column and the rule."""


@dataclass
class ValidationReport:
    source: str
    rows_in: int
    rows_accepted: int = 0
    rows_quarantined: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    encoding_flags: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    class_balance: dict[str, float] = field(default_factory=dict)
    length: dict = field(default_factory=dict)
    latin_letter_share: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass
class Outcome:
    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport


def _require_columns(df: pd.DataFrame, data_cfg: DataConfig, source: str, labelled: bool) -> None:
    needed = [(TEXT, "data.text_column", data_cfg.text_column)]
    if labelled:
        needed.append((LABEL, "data.label_column", data_cfg.label_column))
    for canonical, key, configured in needed:
        if canonical not in df.columns:
            present = ", ".join(str(c) for c in df.columns if c != ROW) or "none"
            raise ValidationFailed(f"{source}: required column {configured!r} ({key}) is missing; "
                                   f"columns present: {present}")


def _first_occurrence_rows(keys: pd.Series, rows: pd.Series) -> pd.Series:
    """For each row, the source row number of the first row with the same key."""
    return keys.map(rows.groupby(keys, sort=False).first())


def check(df: pd.DataFrame, data_cfg: DataConfig, cfg: ValidateConfig, source: str,
          known_labels: Optional[Iterable[str]] = None, labelled: bool = True, require_classes: bool = True) -> Outcome:
    """Pure check of one dataset or batch. known_labels: the allowed label set (a batch: the training labels).

    require_classes: a training set needs two classes or more; a batch of new data may hold one.
    """
    _require_columns(df, data_cfg, source, labelled)
    if len(df) == 0:
        raise ValidationFailed(f"{source}: the file has no data rows (rule: empty file)")
    rows = df[ROW] if ROW in df.columns else pd.Series(range(1, len(df) + 1), index=df.index)
    text = df[TEXT].astype("string").fillna("")
    stripped = text.str.strip()
    label = df[LABEL].astype("string").fillna("").str.strip() if labelled else pd.Series("", index=df.index)
    allowed = set(known_labels) if known_labels is not None else (set(cfg.labels) if cfg.labels else None)

    rule = pd.Series("", index=df.index, dtype=object)
    detail = pd.Series("", index=df.index, dtype=object)

    def mark(mask: pd.Series, name: str, why) -> None:
        hit = mask & (rule == "")
        rule[hit] = name
        detail[hit] = why[hit] if isinstance(why, pd.Series) else why

    undecodable, mojibake = quality.undecodable(text), quality.mojibake(text)
    mark(stripped == "", "blank_text", "text is empty after stripping whitespace")
    if labelled:
        mark(label == "", "blank_label", f"no value in column {data_cfg.label_column!r}")
        if allowed is not None:
            mark(~label.isin(allowed), "unknown_label", "label " + label + " is not one of " + repr(sorted(allowed)))
    mark(stripped.str.len() < cfg.min_chars, "too_short", f"fewer than validate.min_chars={cfg.min_chars} characters")
    if cfg.encoding_action == "quarantine":
        mark(undecodable, "encoding", "undecodable bytes (U+FFFD)")
        mark(mojibake, "encoding", "mojibake markers (text decoded with the wrong codec)")

    live = rule == ""
    norm = quality.normalize(stripped)
    if labelled and cfg.drop_conflicting_labels:
        n_labels = label[live].groupby(norm[live]).transform("nunique")
        mark(live & (n_labels.reindex(df.index, fill_value=1) > 1), "conflicting_label",
             "the same (normalized) text appears with different labels")
    live = rule == ""
    if cfg.drop_duplicates:
        dup = live & stripped.where(live).duplicated(keep="first")
        first = _first_occurrence_rows(stripped[live], rows[live]).reindex(df.index)
        mark(dup, "duplicate_text", "same text as row " + first.astype("Int64").astype(str))
    live = rule == ""
    if cfg.drop_near_duplicates:
        near = live & norm.where(live).duplicated(keep="first")
        first = _first_occurrence_rows(norm[live], rows[live]).reindex(df.index)
        mark(near, "near_duplicate", "same text as row " + first.astype("Int64").astype(str)
             + " after normalizing case, whitespace, URLs and @handles")

    quarantined = rule != ""
    report = ValidationReport(source=source, rows_in=len(df))
    report.quarantined_by_rule = {k: int(v) for k, v in rule[quarantined].value_counts().sort_index().items()}
    report.rows_quarantined = int(quarantined.sum())
    report.encoding_flags = {"undecodable": int(undecodable.sum()), "mojibake": int(mojibake.sum())}
    share = report.rows_quarantined / len(df)
    if share > cfg.max_quarantine_share:
        raise ValidationFailed(f"{source}: {share:.1%} of rows fail row-level rules ({report.quarantined_by_rule}); "
                               f"validate.max_quarantine_share is {cfg.max_quarantine_share:.1%}")

    accepted = df.loc[~quarantined].assign(**{TEXT: stripped[~quarantined].astype(str)})
    if labelled:
        accepted[LABEL] = label[~quarantined].astype(str)
    quarantine = pd.DataFrame({ROW: rows[quarantined], "rule": rule[quarantined], "detail": detail[quarantined],
                               TEXT: text[quarantined], LABEL: label[quarantined]})[QUARANTINE_COLUMNS]
    report.rows_accepted = len(accepted)
    if len(accepted) < cfg.min_rows:
        raise ValidationFailed(f"{source}: only {len(accepted)} rows pass the row-level rules; "
                               f"validate.min_rows requires {cfg.min_rows}")
    report.length = quality.length_profile(accepted[TEXT])
    report.latin_letter_share = quality.latin_letter_share(accepted[TEXT])
    if labelled and require_classes:
        _check_classes(accepted[LABEL], data_cfg, cfg, source, report)
    elif labelled:
        report.class_counts = {str(k): int(v) for k, v in accepted[LABEL].value_counts().sort_index().items()}
    return Outcome(accepted.reset_index(drop=True), quarantine.reset_index(drop=True), report)


def _check_classes(labels: pd.Series, data_cfg: DataConfig, cfg: ValidateConfig, source: str,
                   report: ValidationReport) -> None:
    counts = labels.value_counts().sort_index()
    if len(counts) < 2:
        raise ValidationFailed(f"{source}: column {data_cfg.label_column!r} has a single class "
                               f"({', '.join(counts.index)}); training needs at least two (rule: one class)")
    rare = counts[counts < cfg.min_rows_per_class]
    if len(rare):
        raise ValidationFailed(f"{source}: column {data_cfg.label_column!r}: classes below "
                               f"validate.min_rows_per_class={cfg.min_rows_per_class}: "
                               + ", ".join(f"{k} ({v})" for k, v in rare.items()))
    report.class_counts = {str(k): int(v) for k, v in counts.items()}
    shares = counts / counts.sum()
    report.class_balance = {"min_share": float(shares.min()), "max_share": float(shares.max()),
                            "imbalance_ratio": float(counts.max() / counts.min())}


def run(data_cfg: DataConfig, cfg: ValidateConfig, raw: str | Path, output: str | Path, quarantine: str | Path,
        report_path: str | Path, source: str) -> ValidationReport:
    outcome = check(pd.read_parquet(raw), data_cfg, cfg, source)  # raises before any output is written
    write_parquet(outcome.accepted, output)
    write_text(csv_text(outcome.quarantine), quarantine)
    write_text(outcome.report.to_json(), report_path)
    return outcome.report

"""The data-quality gate's rules engine: what stage `validate` runs on the training data and ingest runs on a batch.

Row-level rules (each kind's, in `Kind.row_rules`) send a row to quarantine with its row number, rule and detail,
and the rest continue. Dataset-level rules raise ValidationFailed; `check` writes nothing, so its callers write only
after every rule passed. Every threshold is a `validate.*` param.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

import pandas as pd

from tasks.config import DataConfig, ValidateConfig
from tasks.kinds import get_kind
from tasks.kinds.base import ROW, Kind, TokenBudget


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
    kind_flags: dict = field(default_factory=dict)  # what a kind counted without quarantining (e.g. converted images)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass
class Outcome:
    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport


class RuleMarker:
    """Each row gets the first rule it breaks (rule + detail); the kind's rules call it in their order."""

    def __init__(self, index: pd.Index, rows: pd.Series):
        self.rows = rows
        self.rule = pd.Series("", index=index, dtype=object)
        self.detail = pd.Series("", index=index, dtype=object)

    @property
    def live(self) -> pd.Series:
        return self.rule == ""

    def __call__(self, mask: pd.Series, name: str, why) -> None:
        hit = mask & self.live
        self.rule[hit] = name
        self.detail[hit] = why[hit] if isinstance(why, pd.Series) else why

    def conflicting(self, key: pd.Series, label: pd.Series) -> None:
        """Every copy of a key (a normalized text, say) seen with different labels."""
        live = self.live
        n_labels = label[live].groupby(key[live]).transform("nunique")
        self(live & (n_labels.reindex(key.index, fill_value=1) > 1), "conflicting_label",
             "the same (normalized) text appears with different labels")

    def duplicates(self, key: pd.Series, name: str, template: str) -> None:
        """Rows whose key repeats an earlier live row's; the detail names that row ({first})."""
        live = self.live
        dup = live & key.where(live).duplicated(keep="first")
        first = key[live].map(self.rows[live].groupby(key[live], sort=False).first()).reindex(key.index)
        before, _, after = template.partition("{first}")
        self(dup, name, before + first.astype("Int64").astype(str) + after)


def _require_columns(df: pd.DataFrame, kind: Kind, data_cfg: DataConfig, source: str, labelled: bool) -> None:
    for canonical, key, configured in kind.required_columns(data_cfg, labelled):
        if canonical not in df.columns:
            present = ", ".join(str(c) for c in df.columns if c != ROW) or "none"
            raise ValidationFailed(f"{source}: required column {configured!r} ({key}) is missing; "
                                   f"columns present: {present}")


def check(df: pd.DataFrame, data_cfg: DataConfig, cfg: ValidateConfig, source: str,
          known_labels: Optional[Iterable[str]] = None, labelled: bool = True, require_classes: bool = True,
          kind: Kind | str = "text-classification", budget: Optional[TokenBudget] = None) -> Outcome:
    """Pure check of one dataset or batch. known_labels: the allowed label set (a batch: the training labels).

    require_classes: a training set needs its kind's minimum of classes; a batch of new data may hold one.
    """
    kind = get_kind(kind)
    _require_columns(df, kind, data_cfg, source, labelled)
    if len(df) == 0:
        raise ValidationFailed(f"{source}: the file has no data rows (rule: empty file)")
    rows = df[ROW] if ROW in df.columns else pd.Series(range(1, len(df) + 1), index=df.index)
    allowed = set(known_labels) if known_labels is not None else (set(cfg.labels) if cfg.labels else None)
    marker = RuleMarker(df.index, rows)
    flags = kind.row_rules(df, data_cfg, cfg, allowed, labelled, marker, budget)

    quarantined = ~marker.live
    report = ValidationReport(source=source, rows_in=len(df))
    report.quarantined_by_rule = {k: int(v) for k, v in marker.rule[quarantined].value_counts().sort_index().items()}
    report.rows_quarantined = int(quarantined.sum())
    report.encoding_flags = flags.pop("encoding_flags", {})
    report.kind_flags = flags
    share = report.rows_quarantined / len(df)
    if share > cfg.max_quarantine_share:
        raise ValidationFailed(f"{source}: {share:.1%} of rows fail row-level rules ({report.quarantined_by_rule}); "
                               f"validate.max_quarantine_share is {cfg.max_quarantine_share:.1%}")

    accepted = kind.clean(df.loc[~quarantined], labelled)
    quarantine = pd.concat([pd.DataFrame({ROW: rows[quarantined], "rule": marker.rule[quarantined],
                                          "detail": marker.detail[quarantined]}),
                            kind.display(df.loc[quarantined])], axis=1)
    report.rows_accepted = len(accepted)
    if len(accepted) < cfg.min_rows:
        raise ValidationFailed(f"{source}: only {len(accepted)} rows pass the row-level rules; "
                               f"validate.min_rows requires {cfg.min_rows}")
    for key, value in kind.profile_report(accepted).items():
        setattr(report, key, value)
    if labelled and require_classes:
        _check_classes(kind, kind.class_values(accepted), data_cfg, cfg, source, report)
    elif labelled:
        report.class_counts = {str(k): int(v) for k, v in kind.class_values(accepted).value_counts().sort_index().items()}
    return Outcome(accepted.reset_index(drop=True), quarantine.reset_index(drop=True), report)


def _check_classes(kind: Kind, labels: pd.Series, data_cfg: DataConfig, cfg: ValidateConfig, source: str,
                   report: ValidationReport) -> None:
    counts = labels.value_counts().sort_index()
    column = kind.required_columns(data_cfg, True)[-1][2]
    if len(counts) < kind.min_classes:
        if kind.min_classes == 1:
            raise ValidationFailed(f"{source}: column {column!r} has no entity tags; training needs at least one "
                                   "entity type (rule: no entities)")
        raise ValidationFailed(f"{source}: column {column!r} has a single class "
                               f"({', '.join(counts.index)}); training needs at least two (rule: one class)")
    rare = counts[counts < cfg.min_rows_per_class]
    if len(rare):
        raise ValidationFailed(f"{source}: column {column!r}: classes below "
                               f"validate.min_rows_per_class={cfg.min_rows_per_class}: "
                               + ", ".join(f"{k} ({v})" for k, v in rare.items()))
    report.class_counts = {str(k): int(v) for k, v in counts.items()}
    shares = counts / counts.sum()
    report.class_balance = {"min_share": float(shares.min()), "max_share": float(shares.max()),
                            "imbalance_ratio": float(counts.max() / counts.min())}

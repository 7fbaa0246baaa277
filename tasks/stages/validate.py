"""Stage `validate`: the data-quality gate between raw data and training (tasks/checks.py holds the rules).

Nothing is written unless every dataset-level rule passed, so downstream stages never run on rejected data and
earlier outputs stay as they were.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.checks import ValidationReport, check
from tasks.config import DataConfig, ValidateConfig
from tasks.files.tables import spreadsheet_csv, write_parquet, write_text
from tasks.kinds.base import Kind, TokenBudget


def run(data_cfg: DataConfig, cfg: ValidateConfig, raw: str | Path, output: str | Path, quarantine: str | Path,
        report_path: str | Path, source: str, kind: Kind | str = "text-classification",
        budget: Optional[TokenBudget] = None) -> ValidationReport:
    # raises before any output is written
    outcome = check(pd.read_parquet(raw), data_cfg, cfg, source, kind=kind, budget=budget)
    write_parquet(outcome.accepted, output)
    write_text(spreadsheet_csv(outcome.quarantine), quarantine)
    write_text(outcome.report.to_json(), report_path)
    return outcome.report

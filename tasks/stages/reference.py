"""Stage `reference`: profile a sample of the training rows (no augmented copies) with the trained model, for drift
monitoring: what new batches are compared with once this model is in production."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.files.tables import write_parquet
from tasks.inference import Predictor
from tasks.kinds import get_kind
from tasks.kinds.base import Kind, raw_rows, read_split
from tasks.monitoring.profile import sample


def run(processed_dir: str | Path, model_dir: str | Path, output: str | Path, rows: int, seed: int,
        batch_size: int = 64, max_length: Optional[int] = None, kind: Kind | str = "text-classification",
        precision: str = "auto") -> pd.DataFrame:
    kind = get_kind(kind)
    train = read_split(Path(processed_dir) / "train.parquet")
    train = sample(train[~train["augmented"]].reset_index(drop=True), rows, seed)
    profile = Predictor(model_dir, max_length, batch_size, precision=precision).profile(raw_rows(kind, train).reset_index(drop=True))
    write_parquet(profile, output)
    return profile

"""Profiles for drift monitoring: the kind's descriptors, the model's predictions and confidences, its embeddings.

The same function profiles the training sample (stage `reference`, cached by DVC and stored with each registered
model) and every new batch, so the two sides of a drift check are always measured the same way. What a profile
holds per kind is the kind's business (tasks/kinds/); this module only samples and builds.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from tasks.kinds.base import CONFIDENCE, EMB_PREFIX, LABEL, PRED

__all__ = ["CONFIDENCE", "PRED", "LABEL", "build", "embedding_columns", "sample"]


def build(predictor, texts_or_rows, labels: Optional[list[str]] = None) -> pd.DataFrame:
    """One profile row per input row. Takes canonical rows, or (for text classification) a list of texts and
    optional labels."""
    frame = texts_or_rows
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame({"text": list(texts_or_rows)})
        if labels is not None:
            frame[LABEL] = labels
    return predictor.profile(frame)


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(EMB_PREFIX)]


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed).sort_index()

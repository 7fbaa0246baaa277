"""Batches of new data cut from the embedded tweet corpus, for the demo loop (`make run`) and the tests:
`other` topics (not matching data.embedded_topic_pattern) make real drift; `same` topic rows make none."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from tasks.config import DataConfig
from tasks.kinds.text import TextKind
from tasks.files.tables import csv_text, write_text


def write_batch(cfg: DataConfig, output: str | Path, rows: int, topics: Literal["other", "same"] = "other",
                seed: int = 7, labelled: bool = True) -> Path:
    df = TextKind().read_source(cfg.model_copy(update={"path": None, "include_pattern": None,
                                                      "embedded_topic_pattern": None}))
    text = df["text"].astype(str)
    topic = cfg.embedded_topic_pattern
    on_topic = text.str.contains(topic, case=False, regex=True) if topic else True
    pool = df[~on_topic] if topics == "other" else df[on_topic]
    batch = pool.sample(n=min(rows, len(pool)), random_state=seed)[["text", "label"]].rename(
        columns={"text": cfg.text_column, "label": cfg.label_column})
    if not labelled:
        batch = batch.drop(columns=[cfg.label_column])
    write_text(csv_text(batch), output)
    return Path(output)

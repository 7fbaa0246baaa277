"""Stage `preprocess`: deterministic stratified train/val/test split, then batched fast tokenization.

Outputs (one directory, a DVC output): train/val/test.parquet with text, label, label_id, input_ids, length, and
labels.json (the label set, in id order). Same input and params give byte-identical files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from tasks.assets import resolve_model
from tasks.config import PreprocessConfig
from tasks.prepare import LABEL, TEXT
from tasks.tables import write_parquet

SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class PreprocessResult:
    output_dir: Path
    sizes: dict[str, int]
    labels: list[str]


def _cap(df: pd.DataFrame, n: Optional[int], seed: int) -> pd.DataFrame:
    """Stratified subsample down to n rows (a training-budget knob); no-op when n is None or already small."""
    if n is None or len(df) <= n:
        return df
    kept, _ = train_test_split(df, train_size=n, random_state=seed, stratify=df[LABEL])
    return kept


def split(df: pd.DataFrame, cfg: PreprocessConfig) -> dict[str, pd.DataFrame]:
    rest, test = train_test_split(df, test_size=cfg.test_size, random_state=cfg.seed, stratify=df[LABEL])
    train, val = train_test_split(rest, test_size=cfg.val_size / (1 - cfg.test_size), random_state=cfg.seed,
                                  stratify=rest[LABEL])
    caps = {"train": cfg.max_train_samples, "val": cfg.max_val_samples, "test": cfg.max_test_samples}
    # Sorting by the original row order keeps files stable and diffable regardless of the split's shuffling.
    return {name: _cap(part, caps[name], cfg.seed).sort_index() for name, part in
            (("train", train), ("val", val), ("test", test))}


def tokenize(texts: list[str], tokenizer, max_length: int, batch_size: int, desc: str) -> list[np.ndarray]:
    ids: list[np.ndarray] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=f"tokenize {desc}", unit="batch"):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length)
        ids.extend(np.asarray(x, dtype=np.int32) for x in enc["input_ids"])
    return ids


def run(cfg: PreprocessConfig, model_name: str, validated: str | Path, output_dir: str | Path) -> PreprocessResult:
    from transformers import AutoTokenizer  # heavy import, only where tokenization happens

    df = pd.read_parquet(validated)[[TEXT, LABEL]]
    labels = sorted(df[LABEL].unique().tolist())
    label_ids = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_name), use_fast=True)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, part in split(df, cfg).items():
        ids = tokenize(part[TEXT].tolist(), tokenizer, cfg.max_length, cfg.batch_size, name)
        table = part.reset_index(drop=True).assign(
            label_id=part[LABEL].map(label_ids).astype("int64").to_numpy(),
            input_ids=ids,
            length=np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids)),
        )
        write_parquet(table, out / f"{name}.parquet")
        sizes[name] = len(table)
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    return PreprocessResult(output_dir=out, sizes=sizes, labels=labels)

"""Stage `preprocess`: deterministic stratified train/val/test split, leakage check, optional augmentation of the
training split, then batched fast tokenization.

Rows whose normalized text is the same (case, whitespace, URLs, @handles) are grouped and land in one split; a final
check removes any text still found in two splits from val/test and reports the count. Outputs (a DVC output dir):
train/val/test.parquet with text, label, label_id, input_ids, length (for length-bucketed batches), labels.json.
The same input and params give byte-identical files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from tasks import quality
from tasks.assets import resolve_model
from tasks.augment import augment
from tasks.config import PreprocessConfig
from tasks.prepare import LABEL, ORIGIN, SOURCE_ORIGIN, TEXT
from tasks.tables import write_parquet

SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.json"


@dataclass
class PreprocessResult:
    output_dir: Path
    sizes: dict[str, int]
    labels: list[str]
    leakage_removed: int = 0
    augmented_rows: int = 0
    tokens: dict[str, dict] = field(default_factory=dict)


def _cap(df: pd.DataFrame, n: Optional[int], seed: int) -> pd.DataFrame:
    """Stratified subsample down to n rows (a training-budget knob); no-op when n is None or already small."""
    if n is None or len(df) <= n:
        return df
    kept, _ = train_test_split(df, train_size=n, random_state=seed, stratify=df[LABEL])
    return kept


def _stratified(groups: pd.Series, test_size: float, seed: int) -> tuple[pd.Series, pd.Series]:
    try:
        return train_test_split(groups, test_size=test_size, random_state=seed, stratify=groups)
    except ValueError:  # a small batch may have a class too rare to stratify on
        return train_test_split(groups, test_size=test_size, random_state=seed)


def split(df: pd.DataFrame, cfg: PreprocessConfig) -> dict[str, pd.DataFrame]:
    """Split each origin (the source, each pooled batch) on its own, so adding a batch never moves an old row:
    the old test set stays the old test set, and each batch keeps its own holdout."""
    if ORIGIN not in df.columns or df[ORIGIN].nunique() <= 1:
        return split_one(df, cfg)
    parts = [split_one(part, cfg) for _, part in df.groupby(ORIGIN, sort=False)]
    return {name: pd.concat([p[name] for p in parts]).sort_index() for name in SPLITS}


def split_one(df: pd.DataFrame, cfg: PreprocessConfig) -> dict[str, pd.DataFrame]:
    """Stratified split of groups of normalized-equal texts, so near-duplicates never straddle two splits."""
    key = quality.normalize(df[TEXT].astype(str))
    groups = df.groupby(key, sort=True)[LABEL].first()  # one label per group (its first row's) to stratify on
    rest, test = _stratified(groups, cfg.test_size, cfg.seed)
    train, val = _stratified(rest, cfg.val_size / (1 - cfg.test_size), cfg.seed)
    caps = {"train": cfg.max_train_samples, "val": cfg.max_val_samples, "test": cfg.max_test_samples}
    parts = {}
    for name, keys in (("train", train), ("val", val), ("test", test)):
        rows = df[key.isin(keys.index)]
        # Sorting by the original row order keeps files stable and diffable regardless of the split's shuffling.
        parts[name] = _cap(rows, caps[name], cfg.seed).sort_index()
    return parts


def find_leakage(parts: dict[str, pd.DataFrame]) -> dict[str, pd.Series]:
    """For val and test: a mask of rows whose normalized text also occurs in an earlier split."""
    seen = set(quality.normalize(parts["train"][TEXT].astype(str)))
    masks = {}
    for name in ("val", "test"):
        norm = quality.normalize(parts[name][TEXT].astype(str))
        masks[name] = norm.isin(seen)
        seen |= set(norm)
    return masks


def remove_leakage(parts: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], int]:
    masks = find_leakage(parts)
    cleaned = dict(parts, **{name: parts[name][~mask] for name, mask in masks.items()})
    return cleaned, int(sum(int(m.sum()) for m in masks.values()))


def tokenize(texts: list[str], tokenizer, max_length: int, batch_size: int, desc: str) -> list[np.ndarray]:
    ids: list[np.ndarray] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=f"tokenize {desc}", unit="batch"):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length)
        ids.extend(np.asarray(x, dtype=np.int32) for x in enc["input_ids"])
    return ids


def token_profile(lengths: np.ndarray, max_length: int) -> dict:
    if len(lengths) == 0:
        return {}
    return {"p50": float(np.percentile(lengths, 50)), "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()), "truncated_share": float(np.mean(lengths >= max_length))}


def replay(train: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Once batches are pooled, keep only `share` of the old (source) training rows beside the new ones."""
    if share >= 1 or ORIGIN not in train.columns or train[ORIGIN].nunique() <= 1:
        return train
    old = train[train[ORIGIN] == SOURCE_ORIGIN]
    kept = _cap(old, max(1, round(share * len(old))), seed)
    return pd.concat([kept, train[train[ORIGIN] != SOURCE_ORIGIN]]).sort_index()


def run(cfg: PreprocessConfig, model_name: str, validated: str | Path, output_dir: str | Path,
        report_path: Optional[str | Path] = None, replay_share: float = 1.0) -> PreprocessResult:
    from transformers import AutoTokenizer  # heavy import, only where tokenization happens

    df = pd.read_parquet(validated)  # extra columns travel along (e.g. for slice metrics in evaluate)
    labels = sorted(df[LABEL].unique().tolist())
    label_ids = {name: i for i, name in enumerate(labels)}
    parts, leaked = remove_leakage(split(df, cfg))
    parts["train"] = replay(parts["train"], replay_share, cfg.seed)
    a = cfg.augment
    parts["train"] = augment(parts["train"], TEXT, a.copies, list(a.methods), a.p, cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_name), use_fast=True)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = PreprocessResult(output_dir=out, sizes={}, labels=labels, leakage_removed=leaked,
                              augmented_rows=int(parts["train"]["augmented"].sum()))
    for name in SPLITS:
        part = parts[name]
        ids = tokenize(part[TEXT].tolist(), tokenizer, cfg.max_length, cfg.batch_size, name)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
        table = part.reset_index(drop=True).assign(label_id=part[LABEL].map(label_ids).astype("int64").to_numpy(),
                                                   input_ids=ids, length=lengths)
        write_parquet(table, out / f"{name}.parquet")
        result.sizes[name] = len(table)
        result.tokens[name] = token_profile(lengths, cfg.max_length)
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    if report_path is not None:
        report = {k: v for k, v in asdict(result).items() if k != "output_dir"}
        report["class_counts"] = {n: {str(k): int(v) for k, v in parts[n][LABEL].value_counts().sort_index().items()}
                                  for n in SPLITS}
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result

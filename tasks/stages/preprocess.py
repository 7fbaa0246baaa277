"""Stage `preprocess`: deterministic stratified train/val/test split, leakage check, optional augmentation of the
training split, then the kind's encoding into model inputs (tokenizing, tag alignment, image resizing).

Rows whose group key is the same (text: normalized case, whitespace, URLs, @handles; tokens: the words; images: the
bytes) are grouped and land in one split; a final check removes any key still found in two splits from val/test and
reports the count. Outputs (a DVC output dir): train/val/test.parquet with the canonical columns plus the kind's
model-ready columns, labels.json. The same input and params give byte-identical files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.config import PreprocessConfig
from tasks.files.tables import write_parquet
from tasks.kinds import get_kind, resolve_model
from tasks.kinds.base import ORIGIN, SOURCE_ORIGIN, Kind

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


def _cap(df: pd.DataFrame, n: Optional[int], seed: int, kind: Kind) -> pd.DataFrame:
    """Stratified subsample down to n rows (a training-budget knob); no-op when n is None or already small."""
    if n is None or len(df) <= n:
        return df
    try:
        kept, _ = train_test_split(df, train_size=n, random_state=seed, stratify=kind.strata(df))
    except ValueError:  # a stratum too rare to stratify on (rare tag patterns, tiny classes)
        kept, _ = train_test_split(df, train_size=n, random_state=seed)
    return kept


def _stratified(groups: pd.Series, test_size: float, seed: int) -> tuple[pd.Series, pd.Series]:
    try:
        return train_test_split(groups, test_size=test_size, random_state=seed, stratify=groups)
    except ValueError:  # a small batch may have a class too rare to stratify on
        return train_test_split(groups, test_size=test_size, random_state=seed)


def split(df: pd.DataFrame, cfg: PreprocessConfig, kind: Kind | str = "text-classification") -> dict[str, pd.DataFrame]:
    """Split each origin (the source, each pooled batch) on its own, so adding a batch never moves an old row:
    the old test set stays the old test set, and each batch keeps its own holdout."""
    kind = get_kind(kind)
    if ORIGIN not in df.columns or df[ORIGIN].nunique() <= 1:
        return split_one(df, cfg, kind)
    parts = [split_one(part, cfg, kind) for _, part in df.groupby(ORIGIN, sort=False)]
    return {name: pd.concat([p[name] for p in parts]).sort_index() for name in SPLITS}


def split_one(df: pd.DataFrame, cfg: PreprocessConfig, kind: Kind) -> dict[str, pd.DataFrame]:
    """Stratified split of groups of equal keys (e.g. normalized texts), so near-duplicates never straddle two
    splits."""
    key = kind.group_key(df)
    groups = kind.strata(df).groupby(key, sort=True).first()  # one label per group (its first row's) to stratify on
    rest, test = _stratified(groups, cfg.test_size, cfg.seed)
    train, val = _stratified(rest, cfg.val_size / (1 - cfg.test_size), cfg.seed)
    caps = {"train": cfg.max_train_samples, "val": cfg.max_val_samples, "test": cfg.max_test_samples}
    parts = {}
    for name, keys in (("train", train), ("val", val), ("test", test)):
        rows = df[key.isin(keys.index)]
        # Sorting by the original row order keeps files stable and diffable regardless of the split's shuffling.
        parts[name] = _cap(rows, caps[name], cfg.seed, kind).sort_index()
    return parts


def find_leakage(parts: dict[str, pd.DataFrame], kind: Kind | str = "text-classification") -> dict[str, pd.Series]:
    """For val and test: a mask of rows whose group key (e.g. normalized text) also occurs in an earlier split."""
    kind = get_kind(kind)
    seen = set(kind.group_key(parts["train"]))
    masks = {}
    for name in ("val", "test"):
        norm = kind.group_key(parts[name])
        masks[name] = norm.isin(seen)
        seen |= set(norm)
    return masks


def remove_leakage(parts: dict[str, pd.DataFrame], kind: Kind | str = "text-classification") -> tuple[dict[str, pd.DataFrame], int]:
    masks = find_leakage(parts, kind)
    cleaned = dict(parts, **{name: parts[name][~mask] for name, mask in masks.items()})
    return cleaned, int(sum(int(m.sum()) for m in masks.values()))


def replay(train: pd.DataFrame, share: float, seed: int, kind: Kind) -> pd.DataFrame:
    """Once batches are pooled, keep only `share` of the old (source) training rows beside the new ones."""
    if share >= 1 or ORIGIN not in train.columns or train[ORIGIN].nunique() <= 1:
        return train
    old = train[train[ORIGIN] == SOURCE_ORIGIN]
    kept = _cap(old, max(1, round(share * len(old))), seed, kind)
    return pd.concat([kept, train[train[ORIGIN] != SOURCE_ORIGIN]]).sort_index()


def run(cfg: PreprocessConfig, model_name: str, validated: str | Path, output_dir: str | Path,
        report_path: Optional[str | Path] = None, replay_share: float = 1.0,
        kind: Kind | str = "text-classification") -> PreprocessResult:
    kind = get_kind(kind)
    df = pd.read_parquet(validated)  # extra columns travel along (e.g. for slice metrics in evaluate)
    labels = kind.label_set(df)
    parts, leaked = remove_leakage(split(df, cfg, kind), kind)
    parts["train"] = replay(parts["train"], replay_share, cfg.seed, kind)
    parts["train"] = kind.augment(parts["train"], cfg.augment, cfg.seed)
    processor = kind.load_processor(resolve_model(model_name, kind))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = PreprocessResult(output_dir=out, sizes={}, labels=labels, leakage_removed=leaked,
                              augmented_rows=int(parts["train"]["augmented"].sum()))
    for name in SPLITS:
        table, result.tokens[name] = kind.encode(parts[name], processor, cfg, labels)
        write_parquet(table, out / f"{name}.parquet")
        result.sizes[name] = len(table)
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    if report_path is not None:
        report = {k: v for k, v in asdict(result).items() if k != "output_dir"}
        report["class_counts"] = {n: {str(k): int(v) for k, v in kind.class_values(parts[n]).value_counts()
                                      .sort_index().items()} for n in SPLITS}
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result

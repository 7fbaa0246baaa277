"""Download-free text augmentation for training rows: random word deletion and random word swap (EDA-style).

Applied to the training split only (never validation or test), seeded, so preprocessing stays deterministic.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = ("random_deletion", "random_swap")


def random_deletion(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    if len(words) < 2:
        return words
    kept = [w for w in words if rng.random() >= p]
    return kept or [words[int(rng.integers(len(words)))]]


def random_swap(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(max(1, int(round(p * len(words))))):
        i, j = rng.integers(len(words), size=2)
        words[i], words[j] = words[j], words[i]
    return words


def augment(train: pd.DataFrame, text_column: str, copies: int, methods: list[str], p: float,
            seed: int) -> pd.DataFrame:
    """`copies` altered copies of every training row, each by one method picked in turn; originals are kept."""
    if copies == 0 or not methods:
        return train.assign(augmented=False)
    rng = np.random.default_rng(seed)
    funcs = {"random_deletion": random_deletion, "random_swap": random_swap}
    extra = []
    for copy in range(copies):
        method = funcs[methods[copy % len(methods)]]
        texts = [" ".join(method(t.split(), p, rng)) for t in train[text_column]]
        extra.append(train.assign(**{text_column: texts}))
    out = pd.concat([train.assign(augmented=False), *(e.assign(augmented=True) for e in extra)])
    # An augmented copy identical to its original adds nothing but weight: drop it.
    return out[~(out["augmented"] & out.duplicated(subset=[text_column, "label"], keep="first"))]

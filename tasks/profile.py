"""Text profiles for drift monitoring: descriptors, the model's predictions and confidences, and its embeddings.

The same function profiles the training sample (stage `reference`, cached by DVC and stored with each registered
model) and every new batch, so the two sides of a drift check are always measured the same way.
Descriptors are computed here: Evidently's OOV and sentiment descriptors call nltk.download, which fails offline.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import pandas as pd

from tasks.prepare import LABEL, TEXT

PRED, CONFIDENCE = "predicted_label", "confidence"
DESCRIPTORS = ("text_length", "word_count", "non_letter_share", "oov_share")
EMB_PREFIX = "emb_"
WORD = re.compile(r"[^\W\d_]+")


def descriptors(texts: pd.Series, vocab: set[str], lowercase: bool) -> pd.DataFrame:
    """Length in characters, words, share of characters that are not letters, share of words the tokenizer's
    vocabulary lacks as a whole token (new slang, names and topics show up here)."""
    texts = texts.astype(str)
    letters = texts.str.count(r"[^\W\d_]")
    length = texts.str.len()

    def oov(text: str) -> float:
        words = WORD.findall(text.lower() if lowercase else text)
        return sum(w not in vocab for w in words) / len(words) if words else 0.0

    return pd.DataFrame({
        "text_length": length.astype(float),
        "word_count": texts.str.split().str.len().fillna(0).astype(float),
        "non_letter_share": (1 - letters / length.where(length > 0)).fillna(0.0),
        "oov_share": texts.map(oov).astype(float),
    }, index=texts.index)


def build(predictor, texts: list[str], labels: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per text: text, [label], predicted label, confidence, descriptors, embedding columns."""
    probs, emb = predictor.probabilities_and_embeddings(texts)
    tok = predictor.tokenizer
    lowercase = bool(getattr(tok, "do_lower_case", False) or tok.init_kwargs.get("do_lower_case", False))
    frame = pd.DataFrame({TEXT: texts})
    if labels is not None:
        frame[LABEL] = labels
    frame[PRED] = [predictor.labels[i] for i in probs.argmax(axis=1)] if len(probs) else []
    frame[CONFIDENCE] = probs.max(axis=1) if len(probs) else []
    frame = pd.concat([frame, descriptors(frame[TEXT], set(tok.get_vocab()), lowercase)], axis=1)
    emb_cols = pd.DataFrame(emb, columns=[f"{EMB_PREFIX}{i}" for i in range(emb.shape[1])])
    return pd.concat([frame, emb_cols], axis=1)


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(EMB_PREFIX)]


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed).sort_index()


def run_reference(processed_dir: str | Path, model_dir: str | Path, output: str | Path, rows: int, seed: int,
                  batch_size: int = 64, max_length: Optional[int] = None) -> pd.DataFrame:
    """Stage `reference`: profile a sample of the training rows (no augmented copies) with the trained model."""
    from tasks.predict import Predictor
    from tasks.tables import write_parquet

    train = pd.read_parquet(Path(processed_dir) / "train.parquet", columns=[TEXT, LABEL, "augmented"])
    train = sample(train[~train["augmented"]], rows, seed)
    profile = build(Predictor(model_dir, max_length, batch_size), train[TEXT].tolist(), train[LABEL].tolist())
    write_parquet(profile, output)
    return profile

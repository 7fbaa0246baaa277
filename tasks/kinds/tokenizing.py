"""Tokenizer helpers the text and token kinds share: batched tokenizing, length profiles, the truncation length a
model reads, and the vocabulary-based OOV descriptor for drift."""
from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np
import pandas as pd

WORD = r"[^\W\d_]+"  # a run of letters (any script)


def load_tokenizer(path: str, pretokenized: bool = False) -> Any:
    """A model's fast tokenizer, ready for batches: one without a pad token (GPT-2, Llama and most decoders) pads
    with its end-of-text token, and `save_pretrained` then records that, so the saved model loads in
    `transformers.pipeline` as it trained. `pretokenized` (words in, as the token kind feeds it): byte-level BPE
    tokenizers read each word as if a space preceded it, as in running text (`add_prefix_space`, transformers'
    advice for pre-split input; other tokenizers ignore it)."""
    from transformers import AutoTokenizer

    from tasks.config import ConfigError

    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, **({"add_prefix_space": True} if pretokenized
                                                                      else {}))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"train.model: the tokenizer of {path} has neither a pad token nor an end-of-text token "
                              "to pad with; add one to its tokenizer_config.json (pad_token)")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # decoders' classifiers pool the last real token: pads go after it
    return tokenizer


def tokenize(texts: list[str], tokenizer: Any, max_length: int, batch_size: int = 1000,
             desc: str = "tokenize") -> list[np.ndarray]:
    """Token ids per text (truncated to max_length), the tokenizer called on `batch_size` texts at a time."""
    from tqdm.auto import tqdm

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


def model_max_length(tokenizer: Any, max_length: Optional[int]) -> int:
    """The configured length, else the tokenizer's own limit (as `transformers.pipeline(truncation=True)` uses)."""
    limit = tokenizer.model_max_length
    return max_length or (limit if limit and limit < 100_000 else 512)


def lowercases(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "do_lower_case", False) or tokenizer.init_kwargs.get("do_lower_case", False))


def oov_share(texts: pd.Series, vocab: set[str], lowercase: bool) -> pd.Series:
    """Share of words the tokenizer's vocabulary lacks as a whole token (new slang, names and topics show up)."""
    word = re.compile(WORD)

    def share(text: str) -> float:
        words = word.findall(text.lower() if lowercase else text)
        return sum(w not in vocab for w in words) / len(words) if words else 0.0

    return texts.map(share).astype(float)


def vocabulary_oov(texts: pd.Series, tokenizer: Any) -> pd.Series:
    """`oov_share` against this tokenizer's own vocabulary and casing."""
    return oov_share(texts, set(tokenizer.get_vocab()), lowercases(tokenizer))

"""Length-bucketed batches of pre-tokenized rows: little padding, so CPU and GPU time goes to real tokens.

Needs only numpy and torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch


@dataclass
class TokenizedSplit:
    input_ids: list[np.ndarray]
    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_frame(cls, df) -> "TokenizedSplit":
        """From a preprocess output table (input_ids, label_id, length columns)."""
        return cls([np.asarray(x, dtype=np.int64) for x in df["input_ids"]], df["label_id"].to_numpy(np.int64),
                   df["length"].to_numpy(np.int64))

    @classmethod
    def read(cls, path: str | Path) -> "TokenizedSplit":
        import pandas as pd

        return cls.from_frame(pd.read_parquet(path, columns=["input_ids", "label_id", "length"]))


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: Optional[np.random.Generator] = None,
                     pool_batches: int = 50) -> list[np.ndarray]:
    """Index batches of similar length.

    Training (rng given): shuffle, sort within pools of `pool_batches` batches, shuffle batch order, so batches stay
    random across epochs but padding stays small. Inference (rng None): one global sort by length.
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    perm = rng.permutation(n)
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, n, pool):
        chunk = perm[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def iterate(split: TokenizedSplit, batches: list[np.ndarray], pad_id: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    for idx in batches:
        ids, mask = collate([split.input_ids[i] for i in idx], pad_id)
        yield idx, ids, mask


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def predict_proba(model, split: TokenizedSplit, pad_id: int, batch_size: int, device: torch.device,
                  desc: str = "predict") -> np.ndarray:
    """Class probabilities for every row, in the split's row order."""
    return predict_outputs(model, split, pad_id, batch_size, device, desc)[0]


@torch.inference_mode()
def predict_outputs(model, split: TokenizedSplit, pad_id: int, batch_size: int, device: torch.device,
                    desc: str = "predict", embeddings: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Class probabilities and, if asked, the model's own text embeddings (mean of the last hidden layer over real
    tokens), in one pass, in the split's row order."""
    from tqdm.auto import tqdm

    model.eval()
    probs = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    emb = np.zeros((len(split), model.config.hidden_size), dtype=np.float32) if embeddings else None
    batches = bucketed_batches(split.lengths, batch_size)
    for idx, ids, mask in tqdm(iterate(split, batches, pad_id), total=len(batches), desc=desc, unit="batch"):
        mask = mask.to(device)
        out = model(input_ids=ids.to(device), attention_mask=mask, output_hidden_states=embeddings)
        probs[idx] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
        if embeddings:
            hidden, weights = out.hidden_states[-1].float(), mask.unsqueeze(-1).float()
            emb[idx] = ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu().numpy()
    return probs, emb

"""One home for what the training loop and inference read: a split of model-ready rows that makes index batches and
collates them into model inputs and targets.

Every task kind hands the engine a `Split`; the engine never asks which kind it is. `TokenizedSplit` holds one label
per row of token ids (text), `TaggedSplit` one label per sub-token (tokens; IGNORE_INDEX where the loss must not
look), `ImageSplit` stored pixel squares with the training-only crops, flips and colour jitter, `CausalSplit` whole
conversations whose next-token targets cover the response only (causal language models).
Needs only numpy and torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100  # what torch's cross-entropy skips: sub-tokens after a word's first, special tokens, padding


class Split(Protocol):
    def __len__(self) -> int: ...

    def batches(self, batch_size: int, rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
        """Index batches: shuffled for training (rng given), in a fixed order for inference (rng None)."""

    def collate(self, idx: np.ndarray, train: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs and targets for these rows; `train` turns on training-only transforms."""

    def targets(self) -> np.ndarray:
        """Every target id the loss sees, flat (for class weights)."""


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


def pad(rows: Sequence[np.ndarray], value: int) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def collate(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = pad(rows, pad_id)
    mask = pad([np.ones(len(r), dtype=np.int64) for r in rows], 0)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def shifted_targets(rows: Sequence[np.ndarray], starts: Sequence[int], width: int) -> torch.Tensor:
    """Next-token targets for right-padded rows: position t predicts token t+1, and only tokens at or after the
    row's start (its response) count; the prompt, the last position and the padding carry IGNORE_INDEX."""
    out = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for i, (row, start) in enumerate(zip(rows, starts)):
        first = max(int(start), 1)
        out[i, first - 1:len(row) - 1] = row[first:]
    return torch.from_numpy(out)


@dataclass
class TokenizedSplit:
    """Token ids with one target per row: a class id (text classification) or a float (text regression)."""
    input_ids: list[np.ndarray]
    labels: np.ndarray
    lengths: np.ndarray
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_frame(cls, df, pad_id: int = 0) -> "TokenizedSplit":
        """From a preprocess output table (input_ids, length, and label_id: a class; or target: a regression's
        float)."""
        ids = [np.asarray(x, dtype=np.int64) for x in df["input_ids"]]
        lengths = df["length"].to_numpy(np.int64) if "length" in df.columns else np.array([len(x) for x in ids])
        targets = df["target"].to_numpy(np.float32) if "target" in df.columns else df["label_id"].to_numpy(np.int64)
        return cls(ids, targets, lengths, pad_id)

    @classmethod
    def read(cls, path: str | Path, pad_id: int = 0) -> "TokenizedSplit":
        import pandas as pd

        return cls.from_frame(pd.read_parquet(path, columns=["input_ids", "label_id", "length"]), pad_id)

    def batches(self, batch_size: int, rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
        return bucketed_batches(self.lengths, batch_size, rng)

    def inputs(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        ids, mask = collate([self.input_ids[i] for i in idx], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def collate(self, idx: np.ndarray, train: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.inputs(idx), torch.from_numpy(self.labels[idx])

    def targets(self) -> np.ndarray:
        return self.labels


@dataclass
class TaggedSplit(TokenizedSplit):
    """Token ids with a label per sub-token (token classification): `tag_ids` holds IGNORE_INDEX where no label is
    learned (special tokens, a word's later sub-tokens), so only each word's first sub-token carries its tag."""
    tag_ids: list[np.ndarray] = None  # type: ignore[assignment]

    @classmethod
    def from_frame(cls, df, pad_id: int = 0) -> "TaggedSplit":
        ids = [np.asarray(x, dtype=np.int64) for x in df["input_ids"]]
        return cls(ids, np.zeros(len(ids), dtype=np.int64), df["length"].to_numpy(np.int64), pad_id,
                   [np.asarray(x, dtype=np.int64) for x in df["tag_ids"]])

    def collate(self, idx: np.ndarray, train: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.inputs(idx), torch.from_numpy(pad([self.tag_ids[i] for i in idx], IGNORE_INDEX))

    def targets(self) -> np.ndarray:
        flat = np.concatenate(self.tag_ids) if self.tag_ids else np.zeros(0, dtype=np.int64)
        return flat[flat != IGNORE_INDEX]


@dataclass
class CausalSplit:
    """Conversations as token ids (the chat template applied) and where each row's response starts. The targets
    are the next tokens, shifted here (position t predicts token t+1), with IGNORE_INDEX on the prompt, the last
    position and the padding: the loss covers the answer and its end-of-turn tokens only. Batches are bucketed by
    length (benchmarks/sft_throughput.py measured bucketing against packing)."""
    input_ids: list[np.ndarray]
    starts: np.ndarray
    lengths: np.ndarray
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def from_frame(cls, df, pad_id: int = 0) -> "CausalSplit":
        ids = [np.asarray(x, dtype=np.int64) for x in df["input_ids"]]
        return cls(ids, df["response_start"].to_numpy(np.int64), df["length"].to_numpy(np.int64), pad_id)

    def batches(self, batch_size: int, rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
        return bucketed_batches(self.lengths, batch_size, rng)

    def collate(self, idx: np.ndarray, train: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = [self.input_ids[i] for i in idx]
        ids, mask = collate(rows, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}, shifted_targets(rows, self.starts[idx], ids.shape[1])

    def targets(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)  # no classes to weigh


@dataclass
class ImageSplit:
    """Stored uint8 squares; collate crops (random for training, centre otherwise), flips, jitters, normalizes."""
    pixels: list[np.ndarray]
    labels: np.ndarray
    crop: int
    mean: np.ndarray
    std: np.ndarray
    augment: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        return [order[i:i + batch_size] for i in range(0, len(self), batch_size)]

    def collate(self, idx: np.ndarray, train: bool = False):
        import torch

        images = torch.from_numpy(np.stack([self.pixels[i] for i in idx])).permute(0, 3, 1, 2).float() / 255.0
        side = images.shape[-1]
        if train and "crop" in self.augment:
            # Random crop per image: torch's generator, so a resumed run draws the same crops (its state is saved).
            offsets = torch.randint(0, side - self.crop + 1, (len(idx), 2))
            images = torch.stack([im[:, y:y + self.crop, x:x + self.crop] for im, (y, x) in zip(images, offsets.tolist())])
        else:
            start = (side - self.crop) // 2
            images = images[:, :, start:start + self.crop, start:start + self.crop]
        if train and "flip" in self.augment:
            flip = torch.rand(len(idx)) < 0.5
            images[flip] = images[flip].flip(-1)
        if train and "color" in self.augment:
            n = len(idx)
            brightness = 1 + (torch.rand(n, 1, 1, 1) - 0.5) * 0.4
            contrast = 1 + (torch.rand(n, 1, 1, 1) - 0.5) * 0.4
            grey_mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = ((images * brightness - grey_mean) * contrast + grey_mean).clamp(0, 1)
        mean = torch.from_numpy(self.mean).view(1, 3, 1, 1)
        std = torch.from_numpy(self.std).view(1, 3, 1, 1)
        return {"pixel_values": (images - mean) / std}, torch.from_numpy(self.labels[idx])

    def targets(self) -> np.ndarray:
        return self.labels

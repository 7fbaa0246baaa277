"""What the training loop and inference read: a split of model-ready rows that makes index batches and collates them.

Every task kind hands the engine a `Split`; the engine never asks which kind it is. `TokenizedSplit` (one label per
row of token ids) and `TaggedSplit` (one label per sub-token, -100 where the loss must not look) live here because
both text kinds share them; the image kind's split lives with the image kind.
Needs only numpy and torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence

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


SEQUENCE_PAD = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}  # None: the split's pad id


@dataclass(frozen=True)
class StaticShapes:
    """Fixed batch shapes for torch.compile and CUDA graphs: each batch's width is padded up to a multiple of
    `multiple` (capped at `max_width`, the split's longest row), and a short last batch is filled up to `rows` with
    rows the loss ignores. A compiled model then sees at most max_width / multiple shapes, each compiled once.
    Nothing is truncated and no real row is added or dropped."""
    multiple: int
    rows: int
    max_width: int
    pad_id: int = 0

    def widths(self) -> list[int]:
        return sorted({min(w, self.max_width) for w in range(self.multiple, self.max_width + self.multiple,
                                                              self.multiple)})

    def width_for(self, width: int) -> int:
        return min(-(-width // self.multiple) * self.multiple, max(self.max_width, width))

    def apply(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[dict, torch.Tensor]:
        n = targets.shape[0]
        out = {}
        width = None
        for key, tensor in inputs.items():
            if key in SEQUENCE_PAD and tensor.dim() == 2:
                width = self.width_for(tensor.shape[1])
                value = self.pad_id if SEQUENCE_PAD[key] is None else SEQUENCE_PAD[key]
                tensor = torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)
            out[key] = self._fill_rows(key, tensor, n)
        if targets.dim() == 2 and width is not None:  # one target per token: the padding carries none
            targets = torch.nn.functional.pad(targets, (0, width - targets.shape[1]), value=IGNORE_INDEX)
        targets = torch.cat([targets, targets.new_full((self.rows - n, *targets.shape[1:]), IGNORE_INDEX)
                             ]) if n < self.rows else targets
        return out, targets

    def _fill_rows(self, key: str, tensor: torch.Tensor, n: int) -> torch.Tensor:
        if n >= self.rows:
            return tensor
        filler = tensor.new_zeros((self.rows - n, *tensor.shape[1:]))  # on the batch's device
        if key == "input_ids":
            filler.fill_(self.pad_id)
        if key == "attention_mask":
            filler[:, 0] = 1  # one visible position: a fully masked row would make attention's softmax undefined
        return torch.cat([tensor, filler])


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


@dataclass
class TokenizedSplit:
    """Token ids with one label per row (text classification)."""
    input_ids: list[np.ndarray]
    labels: np.ndarray
    lengths: np.ndarray
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_frame(cls, df, pad_id: int = 0) -> "TokenizedSplit":
        """From a preprocess output table (input_ids, label_id, length columns)."""
        ids = [np.asarray(x, dtype=np.int64) for x in df["input_ids"]]
        lengths = df["length"].to_numpy(np.int64) if "length" in df.columns else np.array([len(x) for x in ids])
        return cls(ids, df["label_id"].to_numpy(np.int64), lengths, pad_id)

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


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def longest_row(split: Split) -> Optional[int]:
    """The split's longest row in tokens, or None for splits without token lengths (images) or without rows."""
    lengths = getattr(split, "lengths", None)
    return int(np.max(lengths)) if lengths is not None and len(lengths) else None


def units(split: Split, idx: np.ndarray) -> int:
    """What one batch holds, for throughput: real tokens where the split knows its rows' lengths, else rows (images).
    Counted on the host: summing the attention mask would make every training step wait for the device."""
    lengths = getattr(split, "lengths", None)
    return int(lengths[idx].sum()) if lengths is not None else len(idx)


@torch.inference_mode()
def forward_batches(model, split: Split, batch_size: int, device: torch.device, desc: str = "predict",
                    hidden: bool = False) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor], object]]:
    """(row indices, inputs on the device, model outputs) for every inference batch of the split."""
    from tqdm.auto import tqdm

    model.eval()
    batches = split.batches(batch_size)
    for idx in tqdm(batches, total=len(batches), desc=desc, unit="batch"):
        inputs, _ = split.collate(idx)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        yield idx, inputs, model(**inputs, output_hidden_states=hidden)


def mean_pool(hidden: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of the last hidden layer over real tokens (text) or over every position (image feature maps)."""
    hidden = hidden.float()
    if hidden.dim() == 4:  # a CNN's feature map: (batch, channels, h, w)
        return hidden.mean(dim=(2, 3))
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def predict_outputs(model, split: Split, batch_size: int, device: torch.device, desc: str = "predict",
                    embeddings: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Per-row class probabilities and, if asked, the model's own embeddings (mean-pooled last hidden layer), in
    one pass, in the split's row order. For per-row classifiers (text, image)."""
    probs = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    emb = None
    for idx, inputs, out in forward_batches(model, split, batch_size, device, desc, hidden=embeddings):
        probs[idx] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
        if embeddings:
            pooled = mean_pool(out.hidden_states[-1], inputs.get("attention_mask")).cpu().numpy()
            emb = np.zeros((len(split), pooled.shape[1]), dtype=np.float32) if emb is None else emb
            emb[idx] = pooled
    return probs, emb


def predict_proba(model, split: Split, batch_size: int, device: torch.device, desc: str = "predict") -> np.ndarray:
    return predict_outputs(model, split, batch_size, device, desc)[0]

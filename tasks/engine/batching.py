"""Batches beyond the split itself: fixed shapes for torch.compile, throughput units, and inference passes.

Needs only numpy and torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from tasks.engine.splits import IGNORE_INDEX, Split


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
                    embeddings: bool = False,
                    activation: Optional[str] = "softmax") -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Per-row class probabilities (activation None: the raw outputs, a regression's scores) and, if asked, the
    model's own embeddings (mean-pooled last hidden layer), in one pass, in the split's row order. For per-row
    models (text, image)."""
    probs = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    emb = None
    for idx, inputs, out in forward_batches(model, split, batch_size, device, desc, hidden=embeddings):
        logits = out.logits.float()
        probs[idx] = (torch.softmax(logits, dim=-1) if activation == "softmax" else logits).cpu().numpy()
        if embeddings:
            pooled = mean_pool(out.hidden_states[-1], inputs.get("attention_mask")).cpu().numpy()
            emb = np.zeros((len(split), pooled.shape[1]), dtype=np.float32) if emb is None else emb
            emb[idx] = pooled
    return probs, emb

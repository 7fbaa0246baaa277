"""A tokenized training split kept on the accelerator, so a training step copies nothing from the host.

A GPU step on short texts takes about a millisecond; building the batch on the host (padding lists of ids with numpy,
then a copy that waits for the device) takes as long. `ResidentSplit` pads the whole split once into one tensor on
the device (a few MB: 20,000 rows x 64 tokens x 8 bytes = 10 MB) and makes each batch by indexing it there. Batches,
their order and their contents are exactly those of the host split it was made from.
Needs only numpy and torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from tasks.engine.batching import longest_row
from tasks.engine.splits import IGNORE_INDEX, TaggedSplit, TokenizedSplit, pad

MAX_BYTES = 1 << 30  # a split padded larger than this stays on the host


class BatchIndex(np.ndarray):
    """One batch's row indices: a numpy array like any other, carrying a copy already sent to the device.

    A copy from ordinary (pageable) host memory makes CUDA wait for the stream first, i.e. a host sync per step;
    so each epoch's indices go over once, from pinned memory, without waiting, before the first step."""
    device_rows: Optional[torch.Tensor] = None


@dataclass
class ResidentSplit:
    source: TokenizedSplit
    input_ids: torch.Tensor          # (rows, longest row), padded with the pad id, on the device
    row_targets: torch.Tensor        # (rows,) labels, or (rows, longest row) tags padded with IGNORE_INDEX
    device_lengths: torch.Tensor     # (rows,) on the device: the attention mask is built from it

    @property
    def lengths(self) -> np.ndarray:  # on the host: batch widths and token counts without asking the device
        return self.source.lengths

    @property
    def pad_id(self) -> int:
        return self.source.pad_id

    @classmethod
    def of(cls, split: TokenizedSplit, device: torch.device) -> "ResidentSplit":
        ids = torch.from_numpy(pad(split.input_ids, split.pad_id)).to(device)
        if isinstance(split, TaggedSplit):
            targets = torch.from_numpy(pad(split.tag_ids, IGNORE_INDEX)).to(device)
        else:
            targets = torch.from_numpy(np.asarray(split.labels, dtype=np.int64)).to(device)
        return cls(split, ids, targets, torch.from_numpy(np.asarray(split.lengths, dtype=np.int64)).to(device))

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int, rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
        batches = self.source.batches(batch_size, rng)
        if not batches:
            return batches
        device = self.input_ids.device
        order = torch.from_numpy(np.concatenate(batches).astype(np.int64))
        order = order.pin_memory() if device.type == "cuda" else order
        on_device = order.to(device, non_blocking=True)  # one copy per epoch
        out, start = [], 0
        for idx in batches:
            batch = np.asarray(idx).view(BatchIndex)
            batch.device_rows = on_device[start:start + len(idx)]
            out.append(batch)
            start += len(idx)
        return out

    def collate(self, idx: np.ndarray, train: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        width = int(self.lengths[idx].max())
        rows = getattr(idx, "device_rows", None)
        if rows is None:  # indices made elsewhere (inference, tests): copy them now
            rows = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.input_ids.device)
        ids = self.input_ids.index_select(0, rows)[:, :width]
        positions = torch.arange(width, device=ids.device)
        mask = (positions < self.device_lengths.index_select(0, rows)[:, None]).long()
        targets = self.row_targets.index_select(0, rows)
        if targets.dim() == 2:
            targets = targets[:, :width]
        return {"input_ids": ids, "attention_mask": mask}, targets

    def targets(self) -> np.ndarray:
        return self.source.targets()


def place(split, device: torch.device):
    """The split to train from on `device`: resident there when it is an accelerator and the split is tokenized and
    small enough; else the split itself (on a CPU the host is where the model runs)."""
    if device.type == "cpu" or not isinstance(split, TokenizedSplit) or not len(split):
        return split
    if len(split) * longest_row(split) * 8 * 2 > MAX_BYTES:  # ids, plus tags for a tagged split
        return split
    return ResidentSplit.of(split, device)

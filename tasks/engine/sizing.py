"""`train.batch_size: auto`: a batch size chosen for the device, and the learning rate that goes with it.

On a CPU a step's cost grows with the batch, so a larger batch buys nothing and costs optimizer steps: auto keeps 32.
On a GPU a batch of 32 short texts leaves the device idle between kernel launches, so auto fills a token budget:
rows = TOKENS_PER_BATCH / the split's longest row (256 rows of 64-token tweets: the fastest batch the issue measured
on an H100 without running out of anything), but never so many that an epoch has fewer than MIN_STEPS_PER_EPOCH
optimizer steps (a small set still needs steps to learn), rounded down to a multiple of 8 (tensor-core tiles) and
never below the CPU's 32.

The learning rate rule: `train.learning_rate` is the rate for a batch of REFERENCE_BATCH rows; when auto picks B rows,
the rate used is learning_rate x sqrt(B / REFERENCE_BATCH), the square-root scaling rule for Adam-type optimizers
(Malladi et al., 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"), and x B / REFERENCE_BATCH
for SGD (the linear rule, Goyal et al., 2017). An explicit integer batch
size uses learning_rate as given. benchmarks/batch_quality.py measures what the rule keeps.
Needs only the standard library, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

REFERENCE_BATCH = 32            # the CPU default, and the batch train.learning_rate is given for
TOKENS_PER_BATCH = 16384        # real + padding tokens per batch on a GPU
MIN_STEPS_PER_EPOCH = 50        # per process
MAX_ROWS = 1024
ROWS_WITHOUT_LENGTHS = 64       # GPU rows for splits without token lengths (images: 224 px through a CNN or ViT)


@dataclass(frozen=True)
class Sizing:
    batch_size: int
    learning_rate: float
    reason: str


def choose(batch_size: Union[int, str], learning_rate: float, device_type: str, rows: int,
           longest_row: Optional[int], world: int = 1, linear: bool = False,
           cpu_rows: int = REFERENCE_BATCH) -> Sizing:
    """The batch size and learning rate a run uses (see the module doc). `rows`: training rows in all; `longest_row`:
    the split's longest row in tokens, or None for splits without lengths (images). `cpu_rows`: the kind's CPU batch
    (32; a causal LM's prompt-and-answer rows are long enough that 8 rows already keep a CPU busy), whose rate is
    the kind's rate as measured for it, unscaled."""
    if batch_size != "auto":
        return Sizing(int(batch_size), learning_rate, "train.batch_size")
    if device_type != "cuda":
        return Sizing(cpu_rows, learning_rate, f"auto on {device_type}: {cpu_rows}")
    by_tokens = TOKENS_PER_BATCH // max(1, longest_row) if longest_row else ROWS_WITHOUT_LENGTHS
    by_steps = rows // (max(1, world) * MIN_STEPS_PER_EPOCH)
    chosen = max(REFERENCE_BATCH, min(by_tokens, by_steps, MAX_ROWS) // 8 * 8)
    scale = chosen / REFERENCE_BATCH if linear else math.sqrt(chosen / REFERENCE_BATCH)
    rate = learning_rate * scale
    if by_steps < by_tokens:
        limit = f"at least {MIN_STEPS_PER_EPOCH} steps per epoch over {rows} rows"
    elif longest_row:
        limit = f"{TOKENS_PER_BATCH} tokens / {longest_row}-token rows"
    else:
        limit = "the default for rows without token lengths"
    rule = f"{chosen}/{REFERENCE_BATCH}" if linear else f"sqrt({chosen}/{REFERENCE_BATCH})"
    return Sizing(chosen, rate, f"auto on cuda: {chosen} rows ({limit}); learning rate {learning_rate:g} x "
                                f"{rule} = {rate:.3g}")

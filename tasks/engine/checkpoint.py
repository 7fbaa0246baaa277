"""Resumable training state, kept outside DVC outputs (DVC deletes a stage's outputs before running it).

One file per run, `<checkpoint_dir>/<fingerprint>/last.pt`, replaced atomically: model, optimizer, scheduler, RNG
states and the loop's counters. The fingerprint covers the training data and every param that changes the result,
so a changed config never resumes an unrelated run. A finished run deletes its checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from tasks.files.digest import update_with_file

CHECKPOINT_FILE = "last.pt"
# Params that change speed or bookkeeping, not the trained weights.
NOT_IN_FINGERPRINT = {"num_threads", "checkpoint_every_steps", "device", "processes", "compile"}


@dataclass
class LoopState:
    """Where the training loop is, and what it has seen so far."""
    epoch: int = 1                 # the epoch to run (1-based)
    step_in_epoch: int = 0         # batches of that epoch already done
    global_step: int = 0
    rng_epoch_start: Optional[dict] = None  # numpy Generator state before the epoch's batches were drawn
    loss_sum: float = 0.0          # this epoch's summed training loss so far
    best_f1: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    stopped: bool = False
    samples: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def fingerprint(train_cfg: dict[str, Any], files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    kept = {k: v for k, v in train_cfg.items() if k not in NOT_IN_FINGERPRINT}
    digest.update(json.dumps(kept, sort_keys=True, default=str).encode())
    for path in files:
        update_with_file(digest, Path(path))
    return digest.hexdigest()[:16]


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, model, optimizer, scheduler, loop: LoopState, best_state: Optional[dict]) -> None:
    """Write aside, then rename: a kill during the write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loop": asdict(loop), "best_state": best_state, "rng": rng_states()}, tmp)
    os.replace(tmp, path)


def load(path: Optional[Path], model, optimizer, scheduler) -> Optional[tuple[LoopState, Optional[dict]]]:
    """Restore everything from `path` if it exists; returns the loop state and the best weights so far."""
    if path is None or not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)  # our own file: it holds RNG tuples, not just tensors
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    set_rng_states(ck["rng"])
    return LoopState(**ck["loop"]), ck["best_state"]


def discard(path: Optional[Path]) -> None:
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)

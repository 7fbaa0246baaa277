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
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from tasks.files.digest import update_with_file

CHECKPOINT_FILE = "last.pt"
# Params that change speed or bookkeeping, not the trained weights.
NOT_IN_FINGERPRINT = {"num_threads", "checkpoint_every_steps", "device", "processes", "compile"}
# precision changes the arithmetic: a bf16 run does not resume an fp32 one (it stays in the fingerprint)


@dataclass
class LoopState:
    """Where the training loop is, and what it has seen so far."""
    epoch: int = 1                 # the epoch to run (1-based)
    step_in_epoch: int = 0         # batches of that epoch already done
    global_step: int = 0
    rng_epoch_start: Optional[dict] = None  # numpy Generator state before the epoch's batches were drawn
    loss_sum: float = 0.0          # this epoch's summed training loss so far
    best_score: float = float("-inf")  # the best validation score so far, signed so that higher is better
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
    """Every RNG's state in types `torch.load(weights_only=True)` accepts: tensors, numbers, strings, tuples."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
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
    """Restore everything from `path` if it exists; returns the loop state and the best weights so far.

    Loaded with `weights_only=True`: tensors and plain values only, so a file planted at this predictable path can
    run no code. A checkpoint that does not load (damaged, planted, from another version) is set aside with a
    warning and training starts over."""
    if path is None or not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_states(ck["rng"])
        loop = LoopState(**ck["loop"])
    except Exception as exc:
        aside = path.with_name(f"{path.name}.unusable-{os.getpid()}")
        os.replace(path, aside)
        first_line = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:160] if str(exc) else ""
        warnings.warn(f"checkpoint {path} cannot be used ({type(exc).__name__}: {first_line}); set aside as "
                      f"{aside.name}, training starts over", stacklevel=2)
        return None
    return loop, ck["best_state"]


def discard(path: Optional[Path]) -> None:
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)

"""Where the engine runs: the device `train.device: auto` and inference pick.

Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")

"""`train.loss`: what a step minimises, for one label per row or per token, or a score per row.

Classification: cross-entropy, or focal loss (cross-entropy scaled by (1 - p_true)^gamma, so rows the model already
gets right count less and the hard ones, often the rare classes, count more), each with the class weights and label
smoothing the config sets. Positions marked IGNORE_INDEX (tokens without a label) never count.
Regression: mean squared error, or Huber (squared near zero, linear beyond `huber_delta`: outliers pull less).
Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from tasks.engine.splits import IGNORE_INDEX

CLASSIFICATION_LOSSES = ("cross_entropy", "focal")
REGRESSION_LOSSES = ("mse", "huber")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def choose_loss(setting: str, objective: str) -> str:
    """`auto`: cross_entropy for classification, mse for regression; an explicit choice must fit the objective."""
    from tasks.config import ConfigError

    allowed = REGRESSION_LOSSES if objective == "regression" else CLASSIFICATION_LOSSES
    if setting == "auto":
        return allowed[0]
    if setting not in allowed:
        raise ConfigError(f"train.loss {setting}: a {objective} task takes {' or '.join(allowed)} (or auto)")
    return setting


def make_loss(name: str, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0,
              focal_gamma: float = 2.0, huber_delta: float = 1.0) -> Loss:
    """loss(logits, targets): logits (rows, classes) or (rows, length, classes) with integer targets, or
    (rows, 1) scores with float targets."""
    if name == "mse":
        return lambda out, y: F.mse_loss(out.float().reshape(-1), y.float().reshape(-1))
    if name == "huber":
        return lambda out, y: F.huber_loss(out.float().reshape(-1), y.float().reshape(-1), delta=huber_delta)

    def per_position(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out.float().reshape(-1, out.shape[-1]), y.reshape(-1)

    if name == "cross_entropy":
        def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits, targets = per_position(out, y)
            return F.cross_entropy(logits, targets, weight=weight, ignore_index=IGNORE_INDEX,
                                   label_smoothing=label_smoothing)
        return cross_entropy

    def focal(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, targets = per_position(out, y)
        keep = targets != IGNORE_INDEX
        safe = torch.where(keep, targets, torch.zeros_like(targets))
        # Per position, cross-entropy exactly as cross_entropy weighs and smooths it; the mean divides by the summed
        # weights of the positions that count, as cross_entropy's does, so gamma 0 is cross_entropy.
        ce = F.cross_entropy(logits, safe, weight=weight, label_smoothing=label_smoothing, reduction="none") * keep
        p_true = torch.softmax(logits, dim=-1).gather(1, safe[:, None]).squeeze(1)
        counted = (weight[safe] if weight is not None else torch.ones_like(ce)) * keep
        return ((1 - p_true).pow(focal_gamma) * ce).sum() / counted.sum().clamp(min=1e-12)
    return focal

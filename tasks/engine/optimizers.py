"""`train.optimizer`: the update rule over the strategy's param groups. Layer-wise rates and frozen groups are the
groups' own (`lr`, requires_grad), so they behave the same under every rule.

Each rule runs torch's fused implementation where torch has one for the device (AdamW, Adam and SGD on CPU and
CUDA: one kernel over all tensors), else foreach (RMSprop: one vectorised pass per op instead of a Python loop).
Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

import inspect

import torch

RULES = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}


def implementation(rule: str, device_type: str) -> str:
    """fused where torch has it for this rule and device, else foreach."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    fused = "fused" in inspect.signature(RULES[rule].__init__).parameters
    return "fused" if fused and device_type in _get_fused_kernels_supported_devices() else "foreach"


def build_optimizer(rule: str, groups: list[dict], lr: float, device_type: str, momentum: float = 0.9,
                    nesterov: bool = False) -> torch.optim.Optimizer:
    """The optimizer for `groups` (build_param_groups' dicts, each with its own rate and weight decay)."""
    options: dict = {"lr": lr, implementation(rule, device_type): True}
    if rule == "sgd":
        options.update(momentum=momentum, nesterov=nesterov)
    elif rule == "rmsprop":
        options.update(momentum=momentum)
    return RULES[rule](groups, **options)

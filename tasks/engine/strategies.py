"""Fine-tuning strategies from the seeds, as optimizer param groups: new head, frozen base, gradual unfreezing,
layer-wise learning-rate decay.

Groups are named and ordered top-down: "head" (classifier, pooler, final norm: everything on top of the blocks),
"layer.N-1" ... "layer.0" (transformer blocks, or a CNN's stages; families.py finds them), then "embeddings" (token
and position tables, patch embeddings, a CNN's stem). Each group's rate is the rate of the group above times
`layer_lr_decay`. Frozen groups keep requires_grad=False, so AdamW never touches them (bit-identical weights).
Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from tasks.engine.families import block_list, is_embedding, missing_blocks

NO_DECAY_HINTS = ("bias", "LayerNorm", "layer_norm", "norm")


def named_groups(model: nn.Module, blocks: Optional[str] = None,
                 needed_by: Optional[str] = None) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """(group name, [(param name, param)]) top-down: head, layer.N-1 .. layer.0, embeddings.

    The blocks come from families.block_list (`blocks` = train.blocks). Base-model parameters before the first
    block, and any named like an embedding, are "embeddings"; what comes after the blocks (final norms, poolers)
    and everything outside the base model (the new classifier) is "head". Without blocks the whole model is one
    group, which only full fine-tuning at one rate can use: `needed_by` names the setting that needs groups, and
    raises instead.
    """
    layers = block_list(model, blocks)
    if layers is None:
        if needed_by:
            raise missing_blocks(model, needed_by)
        return [("head", list(model.named_parameters()))]
    owner = {id(p): f"layer.{i}" for i, layer in enumerate(layers) for p in layer.parameters()}
    before_blocks = True
    for name, p in getattr(model, "base_model", model).named_parameters():
        if id(p) in owner:
            before_blocks = False
        elif before_blocks or is_embedding(name):
            owner[id(p)] = "embeddings"
    order = ["head"] + [f"layer.{i}" for i in reversed(range(len(layers)))] + ["embeddings"]
    groups: dict[str, list] = {name: [] for name in order}
    for name, p in model.named_parameters():
        groups[owner.get(id(p), "head")].append((name, p))
    return [(name, groups[name]) for name in order if groups[name]]


def groups_needed_by(strategy: str, layer_lr_decay: float) -> Optional[str]:
    """The setting that needs layer groups, if any (full fine-tuning at one rate does not)."""
    if strategy in ("head", "gradual"):
        return f"train.strategy {strategy}"
    if layer_lr_decay != 1.0:
        return "train.layer_lr_decay"
    return None


def build_param_groups(groups: list[tuple[str, list[tuple[str, nn.Parameter]]]], lr: float, weight_decay: float,
                       layer_lr_decay: float = 1.0) -> list[dict]:
    """One optimizer group per (named group, decay/no-decay), with layer-wise rates.

    Only parameters that can train are taken: under LoRA, PEFT has frozen the base for good, and it stays so.
    """
    out = []
    for depth, (group, params) in enumerate(groups):
        rate = lr * layer_lr_decay ** depth
        params = [(n, p) for n, p in params if p.requires_grad]
        decay = [p for n, p in params if not any(h in n for h in NO_DECAY_HINTS)]
        no_decay = [p for n, p in params if any(h in n for h in NO_DECAY_HINTS)]
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "lr": rate, "weight_decay": wd, "name": group, "frozen": False})
    return out


def set_frozen(optimizer: torch.optim.Optimizer, frozen: Iterable[str]) -> None:
    frozen = set(frozen)
    for g in optimizer.param_groups:
        g["frozen"] = g["name"] in frozen
        for p in g["params"]:
            p.requires_grad_(not g["frozen"])


def frozen_groups(strategy: str, epoch: int, group_names: list[str], layers_per_epoch: int = 1) -> list[str]:
    """Which named groups are frozen in `epoch` (1-based).

    full and lora: none (LoRA's frozen base is not in the optimizer at all). head: everything but the head. gradual: epoch 1 trains the head only; each later epoch unfreezes
    `layers_per_epoch` more groups top-down (encoder layers, then embeddings).
    """
    body = [g for g in group_names if g != "head"]
    if strategy in ("full", "lora"):
        return []
    if strategy == "head":
        return body
    if strategy == "gradual":
        unfrozen = (epoch - 1) * layers_per_epoch
        return body[unfrozen:]
    raise ValueError(f"unknown strategy {strategy!r}")


def trainable(optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the unfrozen groups, top-down, as the optimizer sees them."""
    seen = []
    for g in optimizer.param_groups:
        if not g["frozen"] and g["name"] not in seen:
            seen.append(g["name"])
    return seen

"""Fine-tuning strategies from the seeds, as optimizer param groups: new head, frozen base, gradual unfreezing,
layer-wise learning-rate decay.

Groups are named and ordered top-down: "head" (classifier and pooler: everything trained on top of the encoder
layers), "layer.N-1" ... "layer.0" (transformer blocks, or a CNN's stages), then "embeddings" (or a CNN's stem). Each group's rate is the rate of the group above times
`layer_lr_decay`. Frozen groups keep requires_grad=False, so AdamW never touches them (bit-identical weights).
Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

NO_DECAY_HINTS = ("bias", "LayerNorm", "layer_norm", "norm")


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks, bottom to top: the longest ModuleList named like `layer`/`layers` in the base model."""
    base = getattr(model, "base_model", model)
    # Transformers' encoders name them layer/layers/h/block; CNNs name their stages stages (ResNet, ConvNeXt) or
    # blocks (EfficientNet).
    candidates = [m for name, m in base.named_modules()
                  if isinstance(m, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers", "h", "block",
                                                                              "stages", "blocks")]
    if not candidates:
        raise ValueError(f"{type(model).__name__}: cannot find the encoder layers for layer-wise strategies")
    return list(max(candidates, key=len))


def named_groups(model: nn.Module) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """(group name, [(param name, param)]) top-down: head, layer.N-1 .. layer.0, embeddings."""
    layers = encoder_layers(model)
    owner = {}
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            owner[id(p)] = f"layer.{i}"
    base = getattr(model, "base_model", model)
    embeddings = next((getattr(base, n) for n in ("embeddings", "embedder", "stem") if hasattr(base, n)), None)
    for p in (embeddings.parameters() if embeddings is not None else []):
        owner[id(p)] = "embeddings"
    order = ["head"] + [f"layer.{i}" for i in reversed(range(len(layers)))] + ["embeddings"]
    groups: dict[str, list] = {name: [] for name in order}
    for name, p in model.named_parameters():
        groups[owner.get(id(p), "head")].append((name, p))
    return [(name, groups[name]) for name in order if groups[name]]


def build_param_groups(model: nn.Module, lr: float, weight_decay: float, layer_lr_decay: float = 1.0) -> list[dict]:
    """One optimizer group per (named group, decay/no-decay), with layer-wise rates.

    Only parameters that can train are taken: under LoRA, PEFT has frozen the base for good, and it stays so.
    """
    out = []
    for depth, (group, params) in enumerate(named_groups(model)):
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

"""What the engine knows about model families: where a model keeps its blocks (the layer groups that head-only
training, gradual unfreezing and layer-wise rates work on) and which modules LoRA adapts where PEFT has no default.

Blocks: the outermost list of repeated blocks in the base model, by the names transformers gives them: `layer`
(BERT, RoBERTa, DeBERTa, ViT), `layers` (Llama, Qwen, ModernBERT; Swin's stages), `h` (GPT-2), `blocks`
(EfficientNet), `stages` (ResNet, ConvNeXt). `train.blocks` names the list (a dotted module path) for a model
where none of these names fits; a strategy that needs groups then never falls back to full fine-tuning in silence.
Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

BLOCK_LIST_NAMES = ("layer", "layers", "h", "block", "blocks", "stages")
# Parameters named like these are embeddings wherever they sit (DeBERTa keeps its relative-position table after
# the blocks; GPT-2 calls its tables wte and wpe).
EMBEDDING_HINTS = ("embed", "wte", "wpe")
# LoRA targets for families PEFT has no default for (PEFT's own table covers BERT, RoBERTa, DeBERTa-v2, GPT-2,
# Llama, Qwen2 and more): attention projections for transformers, each block's pointwise (1x1) layers for CNNs.
# Alternatives in order: transformers 5 renamed ViT's and Swin's query/value to q_proj/v_proj.
ATTENTION = (["q_proj", "v_proj"], ["query", "value"])
LORA_TARGETS = {
    "distilbert": (["q_lin", "v_lin"],),
    "modernbert": (["Wqkv"],),
    "vit": ATTENTION,
    "deit": ATTENTION,
    "swin": ATTENTION,
    "resnet": (["convolution"],),
    "convnext": (["pwconv1", "pwconv2"],),
    "efficientnet": (["expand_conv", "project_conv"],),
}


def _config_error(message: str) -> Exception:
    from tasks.config import ConfigError  # config imports pydantic; the engine stays importable without it

    return ConfigError(message)


def _roots(model: nn.Module) -> list[nn.Module]:
    """The model, its base model, and under PEFT the wrapped transformers model: where a dotted path may start."""
    base = getattr(model, "base_model", None)
    inner = getattr(base, "model", None)
    return [m for m in (model, base, inner) if isinstance(m, nn.Module)]


def block_list(model: nn.Module, path: Optional[str] = None) -> Optional[list[nn.Module]]:
    """The blocks, bottom to top: `path` (train.blocks) when given, else the outermost list named like blocks in
    the base model (Swin's stages, not the blocks inside one stage). None when there is no such list."""
    if path:
        for root in _roots(model):
            try:
                found = root.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(found, (nn.ModuleList, nn.Sequential)) and len(found):
                return list(found)
            raise _config_error(f"train.blocks: {path} is a {type(found).__name__}, not a list of blocks")
        raise _config_error(f"train.blocks: {type(model).__name__} has no module {path}")
    base = getattr(model, "base_model", model)
    candidates = [(name.count("."), -len(m), name, m) for name, m in base.named_modules()
                  if isinstance(m, nn.ModuleList) and len(m) and name.split(".")[-1] in BLOCK_LIST_NAMES]
    if not candidates:
        return None
    return list(min(candidates, key=lambda c: c[:3])[3])


def lists_of_modules(model: nn.Module, limit: int = 8) -> list[str]:
    """Names of the module lists a model has: what a person would put in train.blocks."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1]
    return names[:limit]


def missing_blocks(model: nn.Module, why: str) -> Exception:
    found = ", ".join(lists_of_modules(model)) or "none"
    return _config_error(f"train.blocks: cannot find the blocks of {type(model).__name__} ({why} needs them); set "
                         f"train.blocks to the dotted path of its list of blocks (module lists in this model: "
                         f"{found})")


def is_embedding(param_name: str) -> bool:
    return any(hint in part for part in param_name.split(".")[:-1] for hint in EMBEDDING_HINTS)


def lora_targets(model: nn.Module) -> Optional[list[str]]:
    """The modules LoRA adapts by default: None where PEFT has its own default for the architecture, tuneline's
    table for the families above; otherwise a clear error naming train.lora.target_modules."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in PEFT_DEFAULTS:
        return None
    leaves = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                     and not n.startswith(("classifier", "score"))})
    for names in LORA_TARGETS.get(model_type, ()):
        if set(names) <= set(leaves):
            return names
    raise _config_error(f"train.lora.target_modules: neither PEFT nor tuneline knows which modules of a "
                        f"{model_type or type(model).__name__} model to adapt; name them (its Linear/Conv2d layers "
                        f"are called: {', '.join(leaves[:12])})")

"""Loading and saving classifiers of any task kind: a new head for the label set, optional LoRA adapters (PEFT),
merged or not. The kind names its transformers auto class (sequence, token or image classification).

A saved model directory is either a plain Hugging Face model (full/head/gradual, or LoRA merged into the weights)
or an adapter directory (LoRA saved as adapter: adapter_config.json + adapter weights + the classifier config and
tokenizer). `load_classifier` reads both, so evaluate, predict and the gate never need to know which.
Imports only torch/transformers (peft where LoRA is used), so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import torch

ADAPTER_CONFIG = "adapter_config.json"
LORA_META = "tuneline_lora.json"  # where the adapter's base model lives, for loading without the hub
SEQUENCE = "AutoModelForSequenceClassification"


def auto_model(auto_class: str):
    import transformers

    return getattr(transformers, auto_class)


def load_model(path: str, labels: list[str], dropout: Optional[float] = None, auto_class: str = SEQUENCE,
               pad_token_id: Optional[int] = None, problem_type: Optional[str] = None):
    """The pre-trained body (a resolved local path or hub id) with a fresh head sized for `labels`
    (id2label/label2id saved). `pad_token_id`: the tokenizer's, recorded in a config that has none (decoders), which
    their classifiers need to find each row's last real token."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                        label2id={l: i for i, l in enumerate(labels)})
    if pad_token_id is not None and getattr(config, "pad_token_id", None) is None:
        print(f"train: {path} has no pad token in its config: padding with token id {pad_token_id} "
              "(the tokenizer's, its end-of-text token where it had none), saved with the model", flush=True)
        config.pad_token_id = pad_token_id
    if problem_type:  # "regression": one raw output, which transformers' pipeline then returns as it is
        config.problem_type = problem_type
    if dropout is not None:  # every *dropout* probability the architecture has (names differ between families)
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, (float, type(None))) and not key.startswith("layerdrop"):
                setattr(config, key, dropout)
    # float32 explicitly: transformers 5 keeps the stored dtype, and training a half-precision checkpoint collapses.
    return auto_model(auto_class).from_pretrained(path, config=config, dtype=torch.float32,
                                                  ignore_mismatched_sizes=True)


def output_layer(model) -> torch.nn.Linear:
    """The Linear layer that produces the model's outputs: the last one whose width is the number of labels."""
    n = model.config.num_labels
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no Linear layer with {n} outputs")
    return layers[-1]


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: Optional[list[str]] = None,
             task_type: str = "SEQ_CLS"):
    """Wrap in LoRA adapters: only the adapters and the new head (PEFT's modules_to_save) stay trainable.

    The adapted modules: `target_modules` (train.lora.target_modules), else the family's default (PEFT's table, or
    tuneline's for the families PEFT lacks: families.lora_targets), else a ConfigError naming the setting."""
    from peft import LoraConfig, TaskType, get_peft_model

    from tasks.engine.families import lora_targets

    targets = target_modules or lora_targets(model)
    if not task_type:  # no PEFT task type (image classification): the head is saved and trained in full
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                            modules_to_save=["classifier"])
    else:
        config = LoraConfig(task_type=getattr(TaskType, task_type), r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=targets)
    return get_peft_model(model, config)


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def save_classifier(model, processor, out: str | Path, base_model: str, merge_lora: bool = True) -> None:
    """HF format. A LoRA model is merged into plain weights, or saved as an adapter beside the classifier config."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if is_peft(model) and merge_lora:
        model = model.merge_and_unload()
    if is_peft(model):
        model.save_pretrained(out)  # adapter_config.json + adapter_model.safetensors (adapters and the head)
        model.base_model.model.config.save_pretrained(out)  # the label set, for loading
        if model.get_base_model().can_generate():  # a generator's settings travel with its adapter
            model.get_base_model().generation_config.save_pretrained(out)
        (out / LORA_META).write_text(json.dumps({"base_model": base_model}) + "\n", encoding="utf-8")
    else:
        model.save_pretrained(out)
    processor.save_pretrained(out)  # tokenizer or image processor: what transformers.pipeline loads beside the model


def load_classifier(model_dir: str | Path, auto_class: str = SEQUENCE):
    """A saved classifier for inference (float32, eval mode): plain HF weights, or base model + LoRA adapter merged."""
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    if not (model_dir / ADAPTER_CONFIG).exists():
        return auto_model(auto_class).from_pretrained(model_dir, dtype=torch.float32).eval()
    from peft import PeftModel

    base = json.loads((model_dir / LORA_META).read_text(encoding="utf-8"))["base_model"]
    config = AutoConfig.from_pretrained(model_dir)
    model = auto_model(auto_class).from_pretrained(base, config=config, dtype=torch.float32,
                                                   ignore_mismatched_sizes=True)
    merged = PeftModel.from_pretrained(model, model_dir).merge_and_unload().eval()
    if (model_dir / "generation_config.json").exists():
        from transformers import GenerationConfig

        merged.generation_config = GenerationConfig.from_pretrained(model_dir)
    return merged


def generation_config_for(model, tokenizer, settings=None):
    """The model's generation settings (its own generation_config, with train's `generate:` section over it): ends
    at the tokenizer's end-of-text/end-of-turn token, pads with its pad token. Saved with the model, so tuneline and
    `transformers.pipeline("text-generation")` generate alike."""
    config = copy.deepcopy(model.generation_config)
    eos = {tokenizer.eos_token_id} | ({config.eos_token_id} if isinstance(config.eos_token_id, int) else
                                      set(config.eos_token_id or []))
    config.eos_token_id = sorted(e for e in eos if e is not None)
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = config.bos_token_id if config.bos_token_id is not None else tokenizer.bos_token_id
    if settings is not None:
        config.max_new_tokens, config.do_sample = settings.max_new_tokens, settings.do_sample
        config.stop_strings = list(settings.stop_strings) or None
        config.temperature, config.top_p = settings.temperature, settings.top_p
    config.max_length = None  # max_new_tokens is the limit (a saved max_length would warn on every call)
    if not config.do_sample:  # greedy: sampling knobs would only warn
        config.temperature, config.top_p, config.top_k = None, None, None
    return config

"""Stage `train`: full fine-tuning of a pre-trained encoder with a new head for the data's label set.

Length-bucketed batches, AdamW with linear warmup/decay, early stopping on validation macro-F1, best weights kept.
Imports only torch/transformers/numpy/sklearn at module level so it runs on a bare GPU box (see DESIGN.md).
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from tasks.assets import resolve_model
from tasks.batching import TokenizedSplit, bucketed_batches, iterate, pick_device, predict_proba
from tasks.config import TrainConfig
from tasks.strategies import build_param_groups, frozen_groups, named_groups, set_frozen, trainable

EpochCallback = Callable[[dict], None]


@dataclass
class TrainResult:
    model_dir: str
    best_epoch: int
    best_val_macro_f1: float
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    samples_per_s: float
    tokens_per_s: float
    device: str
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_model(model_name: str, labels: list[str], dropout: Optional[float] = None):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    config = AutoConfig.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                        label2id={l: i for i, l in enumerate(labels)})
    if dropout is not None:  # every *dropout* probability the architecture has (names differ between families)
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, (float, type(None))) and not key.startswith("layerdrop"):
                setattr(config, key, dropout)
    # A fresh head sized for this label set; float32 explicitly because transformers 5 keeps the stored dtype.
    model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=torch.float32,
                                                               ignore_mismatched_sizes=True)
    return model, tokenizer


def lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return f


def class_weight_tensor(kind: str, labels: np.ndarray, n_classes: int) -> Optional[torch.Tensor]:
    if kind == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def evaluate_split(model, split: TokenizedSplit, pad_id: int, batch_size: int, device: torch.device) -> dict:
    pred = predict_proba(model, split, pad_id, batch_size, device, desc="validate").argmax(-1)
    return {"val_macro_f1": float(f1_score(split.labels, pred, average="macro")),
            "val_accuracy": float(accuracy_score(split.labels, pred))}


def fit(model, train: TokenizedSplit, val: TokenizedSplit, pad_id: int, cfg: TrainConfig,
        on_epoch_end: Optional[EpochCallback] = None) -> tuple[dict, TrainResult]:
    """Train in place; returns the best state dict (by val macro-F1) and the run summary."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    model.to(device)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    optimizer = torch.optim.AdamW(build_param_groups(model, cfg.learning_rate, cfg.weight_decay, cfg.layer_lr_decay),
                                  lr=cfg.learning_rate, fused=device.type == "cuda")
    group_names = [name for name, _ in named_groups(model)]
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.scheduler, int(cfg.warmup_ratio * total),
                                                                       total))
    weight = class_weight_tensor(cfg.class_weights, train.labels, model.config.num_labels)
    weight = weight.to(device) if weight is not None else None

    rng = np.random.default_rng(cfg.seed)
    best_f1, best_epoch, best_state, since_best = -1.0, 0, None, 0
    history, samples, tokens, train_time = [], 0, 0, 0.0
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        set_frozen(optimizer, frozen_groups(cfg.strategy, epoch, group_names, cfg.unfreeze_layers_per_epoch))
        model.train()
        batches = bucketed_batches(train.lengths, cfg.batch_size, rng)
        loss_sum, t0 = 0.0, time.perf_counter()
        bar = tqdm(iterate(train, batches, pad_id), total=len(batches), desc=f"train epoch {epoch}/{cfg.epochs}",
                   unit="batch")
        for idx, ids, mask in bar:
            labels = torch.from_numpy(train.labels[idx]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight,
                                                     label_smoothing=cfg.label_smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item() * len(idx)
            samples += len(idx)
            tokens += int(mask.sum())
            bar.set_postfix(loss=f"{loss.item():.3f}")
        train_time += time.perf_counter() - t0
        record = {"epoch": epoch, "train_loss": loss_sum / len(train),
                  **evaluate_split(model, val, pad_id, 2 * cfg.batch_size, device)}
        history.append({**record, "trainable": trainable(optimizer)})
        if on_epoch_end:
            on_epoch_end(record)
        if record["val_macro_f1"] > best_f1:
            best_f1, best_epoch, since_best = record["val_macro_f1"], epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= cfg.early_stopping_patience:
                break
    result = TrainResult(
        model_dir="", best_epoch=best_epoch, best_val_macro_f1=best_f1, epochs_run=epoch,
        stopped_early=epoch < cfg.epochs, train_seconds=train_time, samples_per_s=samples / max(train_time, 1e-9),
        tokens_per_s=tokens / max(train_time, 1e-9), device=str(device), history=history,
    )
    return best_state, result


def run(cfg: TrainConfig, processed_dir: str | Path, model_dir: str | Path, metrics_dir: str | Path) -> TrainResult:
    from dvclive import Live  # reporting only: the GPU benchmark box calls fit() and has no dvclive

    processed = Path(processed_dir)
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    train, val = TokenizedSplit.read(processed / "train.parquet"), TokenizedSplit.read(processed / "val.parquet")
    seed_everything(cfg.seed)  # the new head's initialisation depends on it
    model, tokenizer = load_model(cfg.model, labels, cfg.dropout)
    # dvclive writes metrics.json (summary) and plots/metrics/*.tsv (one row per epoch) for `dvc plots show`.
    with Live(dir=str(metrics_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        def log_epoch(record: dict) -> None:
            for key, value in record.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()

        best_state, result = fit(model, train, val, tokenizer.pad_token_id or 0, cfg, log_epoch)
        for key, value in asdict(result).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                live.log_metric(key, value, plot=False)
    model.load_state_dict(best_state)
    model.to("cpu")
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    result.model_dir = str(out)
    return result

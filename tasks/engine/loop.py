"""The training engine's loop: one epoch after another over a task kind's `Split`, with the seed practices as switches.

Strategies (full, head, gradual, lora) and layer-wise rates come from strategies.py; resumable checkpoints from
checkpoint.py; DDP from distributed.py. Early stopping on the validation score (macro-F1; RMSE for regression, in
its direction) keeps the best epoch's weights.
The loop knows nothing of the task kind: the split collates model inputs and targets, the validator scores.
Imports only torch/numpy/tqdm at module level so it runs on a bare GPU box (ARCHITECTURE.md, "The engine").
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.config import TrainConfig
from tasks.engine import checkpoint, distributed, resident, sizing
from tasks.engine.stopping import describe_stop, stop_reason
from tasks.engine.batching import StaticShapes, longest_row, units
from tasks.engine.device import choose_precision, physical_cores, pick_device
from tasks.engine.splits import Split
from tasks.engine.losses import choose_loss, make_loss
from tasks.engine.optimizers import build_optimizer, implementation
from tasks.engine.strategies import (build_param_groups, frozen_groups, groups_needed_by, named_groups, set_frozen,
                                     trainable)

Validator = Callable[[torch.nn.Module, int, torch.device], dict]
StepCallback = Callable[[int], None]


class TrainingStopped(Exception):
    """Training stopped between two steps when asked to (a signal); its state is in the checkpoint."""

    def __init__(self, step: int, checkpoint: Optional[Path]):
        super().__init__(f"stopped at step {step}" + (f"; state saved in {checkpoint}" if checkpoint else ""))
        self.step, self.checkpoint = step, checkpoint


@dataclass
class TrainResult:
    model_dir: str
    best_epoch: int
    best_val_score: float  # the best epoch's validation `val_metric` (macro_f1; rmse for regression)
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    samples_per_s: float
    tokens_per_s: float
    device: str
    world_size: int = 1
    resumed_from_step: int = 0
    trainable_params: int = 0
    batch_size: int = 0  # what the run used: train.batch_size, or what `auto` chose for the device
    learning_rate: float = 0.0
    precision: str = "fp32"  # what the run computed in: fp32, or bf16 / fp16 autocast
    val_metric: str = "macro_f1"  # what early stopping and the best epoch follow
    val_higher_is_better: bool = True
    stop_reason: str = ""  # one of STOP_REASONS
    history: list[dict] = field(default_factory=list)

    def stop_summary(self, patience: int) -> str:
        from tasks.scoring import metric_name

        return describe_stop(self.stop_reason, self.epochs_run, self.best_epoch, patience, metric_name(self.val_metric))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return f


def class_weight_tensor(weighting: str, labels: np.ndarray, n_classes: int) -> Optional[torch.Tensor]:
    if weighting == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def batches_per_epoch(split: Split, batch_size: int, world: int) -> int:
    return len(distributed.shard(split.batches(batch_size, np.random.default_rng(0)), 0, world))


LOSS_READ_EVERY = 25  # steps between reads of the loss from the device (the progress bar's figure)


def static_shapes(split: Split, cfg: TrainConfig) -> Optional[StaticShapes]:
    """Fixed batch shapes when asked for (train.pad_multiple) or when compiling (multiples of 16), else None: eager
    training pads each batch to its own longest row, the least work on a CPU."""
    multiple = cfg.pad_multiple or (16 if cfg.compile else None)
    if multiple is None:
        return None
    return StaticShapes(multiple, cfg.batch_size, longest_row(split) or multiple, getattr(split, "pad_id", 0))


def configure_cpu_threads(cfg: TrainConfig, world: int) -> None:
    # One thread per physical core (SMT siblings share a core's units), split between the processes on this CPU:
    # oversubscription makes every one of them slower.
    torch.set_num_threads(cfg.num_threads or max(1, physical_cores() // world))


def fit(model, train: Split, validate: Validator, cfg: TrainConfig, checkpoint_path: Optional[Path] = None,
        on_step_end: Optional[StepCallback] = None, stop_requested: Optional[Callable[[], bool]] = None,
        allow_bf16: bool = True, objective: str = "classification",
        cpu_batch_size: int = sizing.REFERENCE_BATCH) -> tuple[dict, TrainResult]:
    """Train in place; returns the best state dict (by the validation score) and the run summary.

    `validate(model, batch_size, device)` scores the validation split as the task kind defines it and returns at least
    `val_<metric>` for the validator's `metric` attribute (macro_f1 when it has none); early stopping and the best
    epoch follow it, in its direction (`higher_is_better`, True when absent).

    With checkpoint_path, the loop saves its whole state every `checkpoint_every_steps` steps and after every epoch,
    and a rerun resumes from there, ending with the same weights as an uninterrupted run (same seed, CPU). When
    `stop_requested()` turns true (Ctrl-C, SIGTERM), the loop saves its state after the current step and raises
    TrainingStopped: the next run resumes exactly there.
    """
    seed_everything(cfg.seed)
    rank, world = distributed.rank_and_world()
    device = distributed.init(pick_device(cfg.device))
    if device.type == "cpu":
        configure_cpu_threads(cfg, world)
    if cfg.learning_rate == "auto":  # stage train resolves it (rates.py needs the task kind)
        raise ValueError("fit() needs a learning rate: resolve train.learning_rate auto with rates.choose_rate")
    sized = sizing.choose(cfg.batch_size, cfg.learning_rate, device.type, len(train), longest_row(train), world,
                          linear=cfg.optimizer == "sgd", cpu_rows=cpu_batch_size)
    if cfg.batch_size == "auto" and device.type != "cpu" and rank == 0:
        print(f"train: batch size {sized.reason}", flush=True)
    cfg = cfg.model_copy(update={"batch_size": sized.batch_size, "learning_rate": sized.learning_rate})
    model.to(device)
    precision = choose_precision(cfg.precision, device, kind_allows_bf16=allow_bf16)
    if rank == 0:
        print(f"train: {precision.reason}", flush=True)
    # fp16 needs its gradients scaled (bf16 has fp32's range and does not); the weights stay fp32 either way.
    scaler = torch.amp.GradScaler(device.type) if precision.name == "fp16" else None
    groups = named_groups(model, cfg.blocks, needed_by=groups_needed_by(cfg.strategy, cfg.layer_lr_decay))
    # Fused AdamW on CPU cut clip + optimizer step from 0.15 s to 0.04 s per MiniLM batch on the 2-core CI machine.
    optimizer = build_optimizer(cfg.optimizer, build_param_groups(groups, cfg.learning_rate, cfg.weight_decay,
                                                                  cfg.layer_lr_decay),
                                cfg.learning_rate, device.type, cfg.momentum, cfg.nesterov)
    if rank == 0:
        print(f"train: optimizer {cfg.optimizer} ({implementation(cfg.optimizer, device.type)}), loss "
              f"{choose_loss(cfg.loss, objective)}", flush=True)
    group_names = [name for name, _ in groups]
    budget = cfg.epoch_budget
    total = batches_per_epoch(train, cfg.batch_size, world) * budget
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.scheduler, int(cfg.warmup_ratio * total),
                                                                       total))
    weight = None
    if objective == "classification":
        weight = class_weight_tensor(cfg.class_weights, train.targets(), model.config.num_labels)
        weight = weight.to(device) if weight is not None else None
    loss_of = make_loss(choose_loss(cfg.loss, objective), weight, cfg.label_smoothing, cfg.focal_gamma,
                        cfg.huber_delta)

    metric = getattr(validate, "metric", "macro_f1")
    sign = 1.0 if getattr(validate, "higher_is_better", True) else -1.0
    loop, best_state = checkpoint.LoopState(), None
    restored = checkpoint.load(checkpoint_path, model, optimizer, scheduler)
    if restored is not None:
        loop, best_state = restored
    resumed_from = loop.global_step
    if restored is not None and rank == 0:
        print(f"train: resuming at step {resumed_from} (epoch {loop.epoch}) from {checkpoint_path}", flush=True)
    writes_checkpoints = checkpoint_path is not None and rank == 0

    def save_checkpoint() -> None:
        if writes_checkpoints:
            checkpoint.save(checkpoint_path, model, optimizer, scheduler, loop, best_state)

    shapes = static_shapes(train, cfg)
    train = resident.place(train, device)  # after the batch count above: that draw need not go to the device
    if cfg.compile and shapes is not None:  # one graph per width (and the validator's eager path beside them)
        from torch import _dynamo

        _dynamo.config.recompile_limit = max(_dynamo.config.recompile_limit, len(shapes.widths()) + 2)
    # The running loss stays on the device and is read every LOSS_READ_EVERY steps (and at checkpoints and epoch
    # ends), so a step never waits for the GPU just to print a number.
    loss_acc = torch.zeros((), dtype=torch.float64, device=device)

    def flush_loss() -> None:
        nonlocal loss_acc
        loop.loss_sum += float(loss_acc)
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)

    rng = np.random.default_rng(cfg.seed)
    while not loop.stopped and loop.epoch <= budget:
        epoch = loop.epoch
        if loop.rng_epoch_start is None:
            loop.rng_epoch_start = rng.bit_generator.state
        rng.bit_generator.state = loop.rng_epoch_start  # a resumed epoch draws the same batches again
        set_frozen(optimizer, frozen_groups(cfg.strategy, epoch, group_names, cfg.unfreeze_layers_per_epoch))
        forward = distributed.wrap(model, device)
        if cfg.compile:
            forward = torch.compile(forward, dynamic=shapes is None, mode=cfg.compile_mode)
        model.train()
        batches = distributed.shard(train.batches(cfg.batch_size, rng), rank, world)
        seconds_before, samples_before = loop.train_seconds, loop.samples
        t0 = time.perf_counter()
        todo = batches[loop.step_in_epoch:]
        bar = tqdm(todo, total=len(todo), desc=f"train epoch {epoch}/{budget}",
                   unit="batch", **({"disable": True} if rank else {}))  # an explicit False would override TQDM_DISABLE
        for idx in bar:
            inputs, targets = train.collate(idx, train=True)
            real_units = units(train, idx)
            if shapes is not None:
                inputs, targets = shapes.apply(inputs, targets)
            targets = targets.to(device, non_blocking=True)
            with precision.autocast(device):
                logits = forward(**{k: v.to(device, non_blocking=True) for k, v in inputs.items()}).logits
            # One loss for every kind (losses.py): (batch, classes) per row, (batch, length, classes) per token,
            # where IGNORE_INDEX marks the positions that carry no label, or (batch, 1) scores.
            loss = loss_of(logits, targets)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_acc += loss.detach() * len(idx)
            loop.samples += len(idx) * world
            loop.tokens += real_units * world
            loop.step_in_epoch += 1
            loop.global_step += 1
            if loop.step_in_epoch % LOSS_READ_EVERY == 0 or loop.step_in_epoch == len(batches):
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if cfg.checkpoint_every_steps and loop.global_step % cfg.checkpoint_every_steps == 0:
                flush_loss()
                loop.train_seconds += time.perf_counter() - t0
                save_checkpoint()  # not training time
                t0 = time.perf_counter()
            if on_step_end:
                on_step_end(loop.global_step)
            if stop_requested is not None and stop_requested():
                flush_loss()
                loop.train_seconds += time.perf_counter() - t0
                save_checkpoint()
                raise TrainingStopped(loop.global_step, checkpoint_path if writes_checkpoints else None)
        flush_loss()
        loop.train_seconds += time.perf_counter() - t0
        # Every process scores the whole (small) validation split, so all reach the same early-stopping decision.
        rows = sum(len(b) for b in batches)
        epoch_rate = (loop.samples - samples_before) / max(loop.train_seconds - seconds_before, 1e-9)
        with precision.autocast(device):
            scores = validate(model, 2 * cfg.batch_size, device)
        record = {"epoch": epoch, "train_loss": loop.loss_sum / max(1, rows), "epoch_samples_per_s": epoch_rate,
                  **scores}
        loop.history.append({**record, "trainable": trainable(optimizer)})
        if sign * record[f"val_{metric}"] > loop.best_score:
            loop.best_score, loop.best_epoch, loop.since_best = sign * record[f"val_{metric}"], epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            loop.since_best += 1
            loop.stopped = loop.since_best >= cfg.early_stopping_patience
        loop.epoch, loop.step_in_epoch, loop.loss_sum, loop.rng_epoch_start = epoch + 1, 0, 0.0, None
        save_checkpoint()
    distributed.shutdown()
    epochs_run = len(loop.history)
    result = TrainResult(
        model_dir="", best_epoch=loop.best_epoch, best_val_score=sign * loop.best_score, epochs_run=epochs_run,
        stopped_early=loop.stopped, stop_reason=stop_reason(loop.stopped, loop.best_epoch, epochs_run),
        train_seconds=loop.train_seconds,
        samples_per_s=loop.samples / max(loop.train_seconds, 1e-9),
        tokens_per_s=loop.tokens / max(loop.train_seconds, 1e-9), device=str(device), world_size=world,
        resumed_from_step=resumed_from, history=loop.history,
        trainable_params=sum(p.numel() for g in optimizer.param_groups for p in g["params"]),
        batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, precision=precision.name,
        val_metric=metric, val_higher_is_better=sign > 0,
    )
    return best_state, result

"""Stage `train`: fine-tune a pre-trained model with a new head for the data's label set, for any task kind.

The kind supplies the model class, the processor (tokenizer or image processor), the split the engine reads and the
validation scores; the engine (tasks/engine/) runs the loop with the seed practices as switches. Early stopping on
validation score (macro-F1; RMSE for regression) keeps the best epoch's weights.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from tasks.config import GenerateConfig, TrainConfig
from tasks.engine import checkpoint, distributed
from tasks.engine.loop import StepCallback, TrainResult, fit, seed_everything
from tasks.engine.modeling import add_lora, generation_config_for, load_model, save_classifier
from tasks.engine.rates import choose_rate
from tasks.kinds import get_kind, mark_model_kind, resolve_model
from tasks.kinds.base import Kind, read_split

__all__ = ["run", "fit", "TrainResult", "build_model"]


def build_model(cfg: TrainConfig, labels: list[str], kind: Kind | str = "text-classification"):
    """The pre-trained body with a new head for `labels`, its processor, and LoRA adapters if asked for."""
    kind = get_kind(kind)
    path = resolve_model(cfg.model, kind)
    processor = kind.load_processor(path)
    model = load_model(path, labels, cfg.dropout, kind.auto_class, getattr(processor, "pad_token_id", None),
                       kind.problem_type)
    if cfg.strategy == "lora":
        model = add_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules or kind.lora_targets,
                         kind.peft_task)
    return model, processor


def checkpoint_file(cfg: TrainConfig, processed: Path, checkpoint_dir: Optional[str | Path]) -> Optional[Path]:
    if checkpoint_dir is None:
        return None
    run_id = checkpoint.fingerprint(cfg.model_dump(), [processed / n for n in ("train.parquet", "val.parquet",
                                                                              "labels.json")])
    return Path(checkpoint_dir) / run_id / checkpoint.CHECKPOINT_FILE


def log_metrics(metrics_dir: str | Path, result: TrainResult) -> None:
    """dvclive: metrics.json (summary) and plots/metrics/*.tsv (one row per epoch, resumed epochs included)."""
    from dvclive import Live  # reporting only: the GPU benchmark box calls fit() and has no dvclive

    with Live(dir=str(metrics_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for record in result.history:
            for key, value in record.items():
                if key not in ("epoch", "trainable"):
                    live.log_metric(key, value)
            live.next_step()
        for key, value in asdict(result).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                live.log_metric(key, value, plot=False)
        live.summary["stop_reason"] = result.stop_reason  # early_stopped | budget | still_improving
        live.summary["precision"] = result.precision  # fp32 | bf16 | fp16
        live.summary["val_metric"] = result.val_metric  # what best_val_score measures


def run(cfg: TrainConfig, processed_dir: str | Path, model_dir: str | Path, metrics_dir: str | Path,
        checkpoint_dir: Optional[str | Path] = None, on_step_end: Optional[StepCallback] = None,
        kind: Kind | str = "text-classification",
        stop_requested: Optional[Callable[[], bool]] = None,
        generation: Optional[GenerateConfig] = None) -> TrainResult:
    kind = get_kind(kind)
    processed = Path(processed_dir)
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    seed_everything(cfg.seed)  # the new head's initialisation depends on it
    model, processor = build_model(cfg, labels, kind)
    rate = choose_rate(cfg.learning_rate, kind.name, getattr(model.config, "model_type", None), cfg.strategy,
                       cfg.optimizer)
    if cfg.learning_rate == "auto" and distributed.is_main():
        print(f"train: {rate.reason}", flush=True)
    cfg = cfg.model_copy(update={"learning_rate": rate.learning_rate})
    train_frame = read_split(processed / "train.parquet")
    kind.init_head(model, train_frame)
    train = kind.split(train_frame, processor, cfg)
    validate = kind.validation(read_split(processed / "val.parquet"), processor, labels)
    ck = checkpoint_file(cfg, processed, checkpoint_dir)
    best_state, result = fit(model, train, validate, cfg, ck, on_step_end, stop_requested, allow_bf16=kind.bf16_ok,
                             objective=kind.objective, cpu_batch_size=kind.cpu_batch_size)
    result.model_dir = str(model_dir)
    if not distributed.is_main():
        return result
    log_metrics(metrics_dir, result)
    model.load_state_dict(best_state)
    body = model.get_base_model() if hasattr(model, "peft_config") else model  # LoRA: the model inside
    if generation is not None and getattr(body, "can_generate", lambda: False)():  # a generator carries its settings
        body.generation_config = generation_config_for(body, processor, generation)
    save_classifier(model.to("cpu"), kind.saved_processor(processor, train_frame), model_dir,
                    resolve_model(cfg.model, kind), merge_lora=cfg.lora.save == "merged")
    mark_model_kind(model_dir, kind)
    checkpoint.discard(ck)  # the model is saved: the run is complete and needs no resuming
    return result

"""Macro-F1 and wall time of each train.strategy on the same processed data, beside HF Trainer with the same
epochs, learning rate, batch size, warmup and weight decay.

usage: dvc repro preprocess && python benchmarks/strategy_quality.py [--strategies full,head,gradual,lora] [--hf]
       [--lr head=1e-3,lora=5e-4]   (a strategy's own learning rate; the others use params.yaml's)
Reads params.yaml's train section (the default budget) and data/processed; each run trains from the same pre-trained
model and is scored on the test split with tuneline's Predictor (the HF Trainer model too).
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: progress bars drown the table
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import f1_score

from tasks.stages import train
from tasks.config import load_params
from tasks.engine import sizing
from tasks.stages.train import build_model
from tasks.inference import Predictor


def test_macro_f1(model_dir: Path, processed: Path, batch_size: int) -> float:
    test = pd.read_parquet(processed / "test.parquet")
    predicted = Predictor(model_dir, batch_size=batch_size).predict(test, desc="test")
    return float(f1_score(test["label"], predicted.rows, average="macro"))


def hf_trainer(cfg, processed: Path, out: Path) -> None:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    labels = json.loads((processed / "labels.json").read_text())
    df = pd.read_parquet(processed / "train.parquet", columns=["input_ids", "label_id"])
    ds = Dataset.from_dict({"input_ids": [list(map(int, x)) for x in df["input_ids"]],
                            "attention_mask": [[1] * len(x) for x in df["input_ids"]],
                            "labels": df["label_id"].tolist()})
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_model(cfg, labels)
    cuda = torch.cuda.is_available()
    # The batch size and rate tuneline's loop would use here (train.batch_size may be auto).
    sized = sizing.choose(cfg.batch_size, cfg.learning_rate, "cuda" if cuda else "cpu", len(df),
                          max(map(len, df["input_ids"])))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=sized.batch_size,
                             num_train_epochs=cfg.epochs, learning_rate=sized.learning_rate,
                             weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio, seed=cfg.seed,
                             bf16=cuda and torch.cuda.is_bf16_supported(), report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, use_cpu=not cuda)
    Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer)).train()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--strategies", default="full,head,gradual,lora")
    ap.add_argument("--hf", action="store_true", help="also run HF Trainer with the same budget")
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--lr", default="", help="per-strategy learning rates, e.g. head=1e-3,lora=5e-4")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    params = load_params("params.yaml")
    work = Path(tempfile.mkdtemp())
    rows = []
    runs = [(s, None) for s in args.strategies.split(",") if s] + ([("hf-trainer", "hf")] if args.hf else [])
    rates = {k: float(v) for k, v in (item.split("=") for item in args.lr.split(",") if item)}
    n_train = len(pd.read_parquet(args.processed / "train.parquet", columns=["label_id"]))
    print(f"{n_train} training rows, {params.train.epochs} epochs, lr {params.train.learning_rate}, "
          f"batch {params.train.batch_size}, {torch.get_num_threads()} threads")
    for name, kind in runs:
        out = work / name
        start = time.perf_counter()
        if kind == "hf":
            hf_trainer(params.train, args.processed, out)
            epochs = params.train.epochs
        else:
            cfg = params.train.model_copy(update={"strategy": name,
                                                  "learning_rate": rates.get(name, params.train.learning_rate)})
            epochs = train.run(cfg, args.processed, out, work / f"{name}-metrics").epochs_run
        wall = time.perf_counter() - start
        f1 = test_macro_f1(out, args.processed, params.evaluate.batch_size)
        lr = rates.get(name, params.train.learning_rate)
        rows.append({"run": name, "learning_rate": lr, "test_macro_f1": f1, "train_wall_s": wall, "epochs": epochs})
        print(f"{name:12s} lr {lr:<8g} test macro-F1 {f1:.4f}   train wall {wall:7.1f} s   epochs {epochs}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

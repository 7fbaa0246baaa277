"""HF Trainer vs tuneline's trainer, in one process, on the same tweets, model, batch size and learning rate.

usage: python benchmarks/train_throughput.py [--rows 512] [--batch-size 32] [--models minilm,bert-base]
Prints samples/s, tokens/s, MFU (when --peak-tflops is given, e.g. 989 for an H100 in bf16) and the ratio.
HF Trainer runs as recommended for speed: bf16 where available, fused AdamW (CUDA and CPU), dynamic padding
(DataCollatorWithPadding), no logging/saving.
Imports only torch/transformers/numpy/pandas/sklearn, so it runs on a bare GPU box.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tasks.engine.batching import TokenizedSplit
from tasks.config import TrainConfig
from tasks.engine.loop import fit
from tasks.train import build_model


def tweets(n: int) -> tuple[list[str], list[int]]:
    import pandas as pd

    from tasks.files.assets import embedded_corpus_path

    df = pd.read_csv(embedded_corpus_path(), encoding="latin-1").sample(n=n, random_state=0)
    labels = sorted(df["sentiment"].unique())
    return df["text"].astype(str).tolist(), [labels.index(x) for x in df["sentiment"]]


def model_dir(kind: str, workdir: Path) -> str:
    """minilm: the packaged MiniLM-L6 weights. bert-base: a BERT-base-sized config (random weights, same tokenizer)."""
    from tasks.files.assets import resolve_model

    base = resolve_model("default")
    if kind == "minilm":
        return base
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = workdir / "bert-base"
    if not out.exists():
        BertModel(BertConfig()).save_pretrained(out)  # 12 layers, 768 hidden: BERT-base shape
        AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return str(out)


def n_params(path: str) -> int:
    model, _ = build_model(TrainConfig(model=path), ["a", "b", "c"])
    return sum(p.numel() for p in model.parameters())


def run_hf_trainer(path: str, enc: dict, labels: list[int], bs: int, lr: float) -> float:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model, tokenizer = build_model(TrainConfig(model=path), ["negative", "neutral", "positive"])
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    cuda = torch.cuda.is_available()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=bs, num_train_epochs=1,
                             learning_rate=lr, bf16=cuda and torch.cuda.is_bf16_supported(),
                             optim="adamw_torch_fused", report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, use_cpu=not cuda, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    return len(labels) / (time.perf_counter() - start)


def run_tuneline(path: str, enc: dict, labels: list[int], bs: int, lr: float) -> float:
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    cfg = TrainConfig(model=path, epochs=1, batch_size=bs, learning_rate=lr, warmup_ratio=0.0)
    names = ["negative", "neutral", "positive"]
    model, tokenizer = build_model(cfg, names)
    split = TokenizedSplit(ids, np.asarray(labels, dtype=np.int64), np.array([len(x) for x in ids]),
                           tokenizer.pad_token_id or 0)
    import pandas as pd

    from tasks.kinds.text import TextKind

    tiny_val = pd.DataFrame({"input_ids": ids[:bs], "label": [names[i] for i in labels[:bs]]})
    _, result = fit(model, split, TextKind().validator(tiny_val, tokenizer, names), cfg)
    return result.samples_per_s  # training time only, as for the Trainer (its validation is excluded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--models", default="minilm,bert-base")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak (dense) for MFU; omit on CPU")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers import AutoTokenizer

    texts, labels = tweets(args.rows)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{args.rows} tweets, batch {args.batch_size}, max length {args.max_length}, 1 epoch, device {device}")
    print(f"{'model':10s} {'runner':10s} {'samples/s':>10s} {'tokens/s':>10s} {'MFU':>7s}")
    results = []
    work = Path(tempfile.mkdtemp())
    for kind in args.models.split(","):
        path = model_dir(kind, work)
        enc = AutoTokenizer.from_pretrained(path)(texts, truncation=True, max_length=args.max_length)
        tokens = sum(len(x) for x in enc["input_ids"])
        params = n_params(path)
        hf_sps = run_hf_trainer(path, enc, labels, args.batch_size, args.lr)
        tl_sps = run_tuneline(path, enc, labels, args.batch_size, args.lr)
        for runner, sps in (("hf", hf_sps), ("tuneline", tl_sps)):
            tps = sps * tokens / len(labels)  # real (unpadded) tokens per second, the same count for both
            mfu = 6 * params * tps / (args.peak_tflops * 1e12) if args.peak_tflops else None
            shown = "n/a" if mfu is None else f"{mfu:.1%}"
            print(f"{kind:10s} {runner:10s} {sps:10.1f} {tps:10.0f} {shown:>7s}")
            results.append({"model": kind, "runner": runner, "samples_per_s": sps, "tokens_per_s": tps, "mfu": mfu})
        print(f"{kind:10s} ratio tuneline / HF Trainer: {tl_sps / hf_sps:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

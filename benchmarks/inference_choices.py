"""The CPU inference choices `tuneline predict` makes, each measured against the alternative beside it on the same
rows and model: length-sorted batches vs rows in file order, `torch.inference_mode` vs `torch.no_grad`, the
tokenizer called on 1,000 texts at a time vs 64 vs one by one, and torch threads = physical cores vs fewer.

usage: python benchmarks/inference_choices.py --model DIR [--rows 2000] [--precision auto]
Prints rows/s per variant and its ratio to the shipped choice (above 1.00: the alternative would be faster).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")


def texts(n: int) -> list[str]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from predict_throughput import load_rows

    return load_rows(n)[0]


def timed(fn, repeat: int = 2) -> float:
    fn()  # warm-up: allocator, kernels for each shape
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    import torch

    from tasks.engine import batching
    from tasks.engine.device import physical_cores
    from tasks.engine.splits import TokenizedSplit
    from tasks.inference import Predictor
    from tasks.kinds.tokenizing import tokenize

    rows = texts(args.rows)
    predictor = Predictor(args.model, precision=args.precision)
    cores = physical_cores()
    torch.set_num_threads(cores)
    print(f"{len(rows)} texts, model {args.model}, precision {predictor.precision.name}, physical cores {cores}, "
          f"logical CPUs {os.cpu_count()}")
    shipped = timed(lambda: predictor.probabilities(rows))
    results = [("shipped: length-sorted batches, inference_mode, tokenizer x1000, threads = physical cores", shipped)]

    sorted_batches = TokenizedSplit.batches
    TokenizedSplit.batches = lambda self, size, rng=None: np.array_split(
        np.arange(len(self)), max(1, -(-len(self) // size)))
    results.append(("rows in file order (no length sorting)", timed(lambda: predictor.probabilities(rows))))
    TokenizedSplit.batches = sorted_batches

    inference_mode = batching.forward_batches
    batching.forward_batches = torch.no_grad()(inference_mode.__wrapped__)
    results.append(("torch.no_grad instead of inference_mode", timed(lambda: predictor.probabilities(rows))))
    batching.forward_batches = inference_mode

    if cores > 1:
        torch.set_num_threads(max(1, cores // 2))
        results.append((f"threads = {max(1, cores // 2)} (half the physical cores)",
                        timed(lambda: predictor.probabilities(rows))))
        torch.set_num_threads(cores)

    print(f"{'variant':80s} {'rows/s':>8s} {'vs shipped':>10s}")
    for name, seconds in results:
        print(f"{name:80s} {len(rows) / seconds:8.1f} {shipped / seconds:9.2f}x")

    tokenizer = predictor.processor
    print(f"{'tokenizer alone':80s} {'texts/s':>8s} {'vs x1000':>10s}")
    base = timed(lambda: tokenize(rows, tokenizer, 64, 1000, "x1000"))
    for size in (1000, 64, 1):
        seconds = base if size == 1000 else timed(lambda s=size: tokenize(rows, tokenizer, 64, s, f"x{s}"))
        print(f"{'calls of ' + str(size) + ' texts':80s} {len(rows) / seconds:8.1f} {base / seconds:9.2f}x")


if __name__ == "__main__":
    main()

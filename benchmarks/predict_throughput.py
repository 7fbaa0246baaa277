"""tuneline predict vs transformers.pipeline on the same rows and machine; prints rows/s and the ratio.

usage: python benchmarks/predict_throughput.py [--model DIR] [--rows 2000] [--int8]
Default model: models/production (else models/candidate); default rows: embedded tweets (same as training data).
The pipeline runs twice: as users usually call it (batch_size default) and with the same batch size as tuneline.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def load_rows(n: int, seed: int = 0):
    from tasks.config import DataConfig
    from tasks.kinds.text import TextKind

    cfg = DataConfig(embedded_topic_pattern=None)
    df = TextKind().read_source(cfg).sample(n=n, random_state=seed)
    return df["text"].astype(str).tolist(), df["label"].tolist()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--int8", action="store_true", help="also measure dynamic int8 quantization and its accuracy cost")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    model = args.model or next(p for p in (Path("models/production"), Path("models/candidate")) if p.exists())

    import torch
    from transformers import pipeline

    from tasks.inference import Predictor

    texts, truth = load_rows(args.rows)
    print(f"model {model}, {len(texts)} rows, torch threads {torch.get_num_threads()}, device cpu")
    clf = pipeline("text-classification", model=str(model), device=-1)
    clf(texts[:8])  # warm-up
    base, t_base = timed(lambda: [r["label"] for r in clf(texts, truncation=True)])
    base_b, t_base_b = timed(lambda: [r["label"] for r in clf(texts, truncation=True, batch_size=args.batch_size)])

    ours_p = Predictor(model, batch_size=args.batch_size)
    ours_p.probabilities(texts[:8])
    probs, t_ours = timed(lambda: ours_p.probabilities(texts))
    ours = [ours_p.labels[i] for i in probs.argmax(1)]

    rows = [("transformers.pipeline (default batch)", t_base, base),
            (f"transformers.pipeline (batch {args.batch_size})", t_base_b, base_b),
            (f"tuneline predict (bucketed, batch {args.batch_size})", t_ours, ours)]
    if args.int8:
        q = Predictor(model, batch_size=args.batch_size, int8=True)
        q.probabilities(texts[:8])
        qprobs, t_q = timed(lambda: q.probabilities(texts))
        rows.append((f"tuneline predict --int8 (batch {args.batch_size})", t_q, [q.labels[i] for i in qprobs.argmax(1)]))

    print(f"{'runner':48s} {'rows/s':>9s} {'accuracy':>9s} {'agree w/ pipeline':>18s}")
    for name, secs, labels in rows:
        acc = np.mean([a == b for a, b in zip(labels, truth)])
        agree = np.mean([a == b for a, b in zip(labels, base)])
        print(f"{name:48s} {len(texts) / secs:9.1f} {acc:9.4f} {agree:18.4f}")
    print(f"ratio tuneline / pipeline(default): {t_base / t_ours:.2f}x;  "
          f"tuneline / pipeline(batch {args.batch_size}): {t_base_b / t_ours:.2f}x")
    if args.int8:
        print(f"ratio tuneline --int8 / pipeline(default): {t_base / rows[-1][1]:.2f}x")


if __name__ == "__main__":
    main()

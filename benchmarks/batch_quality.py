"""What `train.batch_size: auto` keeps of quality: test macro-F1 at the reference batch (32, the CPU default) against
the batch and learning rate auto picks on a GPU for the same data (tasks/engine/sizing.py), trained here on whatever
device this machine has, on the same processed split.

usage: dvc repro preprocess && python benchmarks/batch_quality.py [--processed data/processed] [--json out.json]
       [--runs reference,auto[,unscaled]]   (unscaled: auto's batch at the unscaled rate, what the rule buys)
The issue's bar: on the embedded default with all airline rows (preprocess.max_train_samples: null), the auto run is
within 1 point of test macro-F1 of the batch-32 run. Reads params.yaml's train section for everything else.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: progress bars drown the table
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from strategy_quality import test_macro_f1  # noqa: E402  (this folder is on sys.path when run as a script)
from tasks.stages import train  # noqa: E402
from tasks.config import load_params  # noqa: E402
from tasks.engine import sizing  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--runs", default="reference,auto", help="any of reference, auto, unscaled")
    args = ap.parse_args()
    params = load_params("params.yaml")
    lengths = pd.read_parquet(args.processed / "train.parquet", columns=["length"])["length"]
    gpu = sizing.choose("auto", params.train.learning_rate, "cuda", len(lengths), int(lengths.max()))
    every = {"reference": (sizing.REFERENCE_BATCH, params.train.learning_rate),
             "auto": (gpu.batch_size, gpu.learning_rate),
             "unscaled": (gpu.batch_size, params.train.learning_rate)}
    runs = [(name, *every[name]) for name in args.runs.split(",")]
    print(f"{len(lengths)} training rows, {params.train.epoch_budget} epochs; {gpu.reason}")
    work = Path(tempfile.mkdtemp())
    rows = []
    for name, batch, rate in runs:
        cfg = params.train.model_copy(update={"batch_size": batch, "learning_rate": rate})
        start = time.perf_counter()
        result = train.run(cfg, args.processed, work / name, work / f"{name}-metrics")
        wall = time.perf_counter() - start
        f1 = test_macro_f1(work / name, args.processed, params.evaluate.batch_size)
        rows.append({"run": name, "batch_size": batch, "learning_rate": rate, "test_macro_f1": f1,
                     "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "train_wall_s": wall})
        print(f"{name:10s} batch {batch:4d}  lr {rate:<9.3g} test macro-F1 {f1:.4f}  best epoch "
              f"{result.best_epoch}/{result.epochs_run}  train wall {wall:6.1f} s on {result.device}", flush=True)
    scores = {r["run"]: r["test_macro_f1"] for r in rows}
    for name in ("auto", "unscaled"):
        if name in scores and "reference" in scores:
            print(f"{name} vs reference: {100 * (scores[name] - scores['reference']):+.2f} points of test macro-F1 "
                  "(bar for auto: no more than 1 point below)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

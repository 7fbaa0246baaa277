"""AdamW, Adam, RMSprop and SGD (momentum 0.9) on the text default at the same budget: test macro-F1 and training
wall time for each, beside each other, so the README can say which to pick.

Each run: the stages `dvc repro` runs (prepare, validate, preprocess once; then train and evaluate per optimizer, the
functions the DVC stages call) on the embedded tweets, with params.yaml's budget except the optimizer and its rate.
The rate is `train.learning_rate: auto` for that optimizer (tasks/engine/rates.py) unless --rates gives one, e.g.
`--rates sgd=1e-2,sgd=3e-2` (an optimizer may appear more than once: a small sweep of its rate).

usage: python benchmarks/optimizer_quality.py [--runs adamw,rmsprop,sgd] [--rates sgd=1e-2] [--epochs 3]
                                              [--rows 3000] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
REPO = Path(__file__).resolve().parents[1]


def params(epochs: int, rows: int, **train):
    import yaml

    from tasks.config import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["task"]["kind"] = "text-classification"
    raw["preprocess"]["max_train_samples"] = rows
    raw["train"].update(epochs=epochs, **train)
    return parse_params(raw, source="params.yaml + benchmark")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="adamw,rmsprop,sgd", help="optimizers at their auto rate")
    ap.add_argument("--rates", default="", help="extra runs at given rates, e.g. sgd=1e-2,sgd=3e-2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from tasks.kinds import get_kind
    from tasks.stages import evaluate, prepare, preprocess, train, validate

    work = Path(tempfile.mkdtemp(prefix="optimizers-"))
    base = params(args.epochs, args.rows)
    kind = get_kind("text-classification")
    prepare.run(base.data, work / "raw.parquet", work / "batches", kind=kind)
    validate.run(base.data, base.validate_, work / "raw.parquet", work / "ok.parquet", work / "q.csv",
                 work / "v.json", source=kind.source_label(base.data), kind=kind)
    processed = preprocess.run(base.preprocess, base.train.model, work / "ok.parquet", work / "processed",
                               kind=kind).output_dir
    runs = [(name, "auto") for name in args.runs.split(",") if name]
    runs += [(k, float(v)) for k, v in (item.split("=") for item in args.rates.split(",") if item)]
    print(f"text default: {args.rows} training rows, {args.epochs} epochs, batch {base.train.batch_size}, "
          f"precision {base.train.precision}")
    results = []
    for i, (optimizer, rate) in enumerate(runs):
        cfg = params(args.epochs, args.rows, optimizer=optimizer, learning_rate=rate)
        start = time.perf_counter()
        result = train.run(cfg.train, processed, work / f"model-{i}", work / f"train-{i}", kind=kind)
        wall = time.perf_counter() - start
        metrics = evaluate.run(cfg.evaluate, processed, work / f"model-{i}", work / f"eval-{i}.json",
                               base_model=cfg.train.model, kind=kind, precision=cfg.inference.precision)
        row = {"optimizer": optimizer, "learning_rate": result.learning_rate, "test_macro_f1":
               metrics["model"]["macro_f1"], "baseline_macro_f1": metrics["baseline_tfidf_logreg"]["macro_f1"],
               "train_wall_s": wall, "samples_per_s": result.samples_per_s, "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run}
        results.append(row)
        print(f"{optimizer:8s} lr {result.learning_rate:<8.3g} test macro-F1 {row['test_macro_f1']:.4f} "
              f"(baseline {row['baseline_macro_f1']:.4f})  train wall {wall:6.1f} s  "
              f"{result.samples_per_s:6.1f} samples/s  best epoch {result.best_epoch}/{result.epochs_run}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

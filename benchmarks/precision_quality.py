"""Quality guard for bf16: each task kind's default run trained and evaluated in fp32 and in bf16, beside each other.

For each kind: the stages of `dvc repro` (prepare, validate, preprocess, train, evaluate: the same functions the
DVC stages call) on the kind's embedded default with the Makefile's per-kind budget, once with
train.precision/inference.precision fp32 and once bf16. Printed per kind: the test headline metric of both runs and
the difference (goal: bf16 within 0.5 points of macro-F1), and, for the fp32 model predicted on its test split in
fp32 and in bf16, the share of labels that differ (goal: at most 0.5%) and the largest probability difference (goal:
1e-2; for regression, the largest score difference). --kinds regression covers text-regression.

usage: python benchmarks/precision_quality.py [--kinds text,token,image] [--json FILE]
On a CPU without native bf16 (no avx512_bf16/AMX flag) it stops: there is no bf16 run to compare.
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

# The Makefile's demo budgets per kind (make run / run-token / run-image), so each run is that kind's default run.
KINDS = {
    "text": {"task": {"kind": "text-classification"}, "train": {"learning_rate": 5e-5, "epochs": 3}},
    "token": {"task": {"kind": "token-classification"}, "train": {"learning_rate": 5e-4, "epochs": 8}},
    "image": {"task": {"kind": "image-classification"}, "preprocess": {"image_size": 64},
              "train": {"learning_rate": 1e-3, "epochs": 8}},
    "regression": {"task": {"kind": "text-regression"}},  # learning rate and epochs auto
}


def params_for(kind: str, precision: str):
    import yaml

    from tasks.config import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for section, values in {**KINDS[kind], "inference": {"precision": precision}}.items():
        raw[section].update(values)
    raw["train"]["precision"] = precision
    return parse_params(raw, source=f"params.yaml + {kind} {precision}")


def prepared_splits(kind: str, work: Path) -> Path:
    """prepare -> validate -> preprocess once per kind (precision does not enter them)."""
    from tasks.kinds import get_kind
    from tasks.stages import prepare, preprocess, validate

    cfg = params_for(kind, "fp32")
    k = get_kind(cfg.task.kind)
    prepare.run(cfg.data, work / "prepared.parquet", work / "batches", kind=k)
    validate.run(cfg.data, cfg.validate_, work / "prepared.parquet", work / "validated.parquet",
                 work / "quarantine.csv", work / "validation.json", source=k.source_label(cfg.data), kind=k)
    preprocess.run(cfg.preprocess, cfg.train.model, work / "validated.parquet", work / "processed", None,
                   cfg.retrain.replay_share, kind=k)
    return work / "processed"


def train_and_evaluate(kind: str, precision: str, processed: Path, work: Path) -> tuple[Path, dict, dict]:
    from tasks.stages import evaluate, train

    cfg = params_for(kind, precision)
    model = work / f"model-{precision}"
    start = time.perf_counter()
    result = train.run(cfg.train, processed, model, work / f"train-{precision}", None, kind=cfg.task.kind)
    seconds = time.perf_counter() - start
    metrics = evaluate.run(cfg.evaluate, processed, model, work / f"eval-{precision}.json", None, seed=cfg.train.seed,
                           base_model=cfg.train.model, kind=cfg.task.kind, precision=precision)
    return model, {**metrics["model"], "headline": metrics["headline"]}, {
        "precision": result.precision, "samples_per_s": result.samples_per_s, "seconds": seconds}


def agreement(model: Path, processed: Path) -> tuple[float, float, int]:
    """The fp32 model on its test split, predicted in fp32 and in bf16: the share of labels that differ (rows, or
    words for the token kind), the largest probability difference, how many labels differ by more than 0.01 in
    some class's probability, and the number of labels."""
    import numpy as np

    from tasks.inference import Predictor
    from tasks.kinds.base import read_split

    test = read_split(processed / "test.parquet")
    fp32 = Predictor(model, precision="fp32").predict(test)
    bf16 = Predictor(model, precision="bf16").predict(test)
    differ = float(np.mean(fp32.unit_probs.argmax(axis=1) != bf16.unit_probs.argmax(axis=1)))
    gap = np.abs(fp32.unit_probs - bf16.unit_probs).max(axis=1)
    return differ, float(gap.max()), int((gap > 0.01).sum()), len(fp32.unit_probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="text,token,image,regression")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from tasks.engine.device import choose_precision

    native = choose_precision("auto", torch.device("cpu"))
    print(f"CPU: {native.reason}; torch threads {torch.get_num_threads()}")
    if native.name != "bf16":
        raise SystemExit("this CPU has no native bf16: nothing to compare")
    results = []
    for kind in args.kinds.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"precision-{kind}-"))
        processed = prepared_splits(kind, work)
        runs = {p: train_and_evaluate(kind, p, processed, work) for p in ("fp32", "bf16")}
        differ, max_prob, over, n = agreement(runs["fp32"][0], processed)
        metric = runs["fp32"][1]["headline"]  # macro_f1; rmse for regression (lower is better)
        f1 = {p: runs[p][1][metric] for p in runs}
        row = {"kind": kind, "test_labels": n, "metric": metric, metric: f1,
               "points_lost": 100 * (f1["fp32"] - f1["bf16"]) * (1 if metric != "rmse" else -1),
               "label_differ_share": differ, "max_prob_diff": max_prob, "units_over_0.01": over,
               "train": {p: runs[p][2] for p in runs}}
        results.append(row)
        print(f"{kind:6s} test {metric} fp32 {f1['fp32']:.4f}  bf16 {f1['bf16']:.4f}  "
              f"(bf16 - fp32 {100 * (f1['bf16'] - f1['fp32']):+.2f} points; goal: within 0.50)  | fp32 model in bf16: "
              f"{differ:.2%} of {n} labels differ (goal <= 0.5%), max prob diff {max_prob:.4f} (goal <= 0.01; "
              f"{over} of {n} above)  | "
              f"train samples/s fp32 {runs['fp32'][2]['samples_per_s']:.1f}, bf16 "
              f"{runs['bf16'][2]['samples_per_s']:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

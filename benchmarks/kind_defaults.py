"""Each task kind on its embedded default with only `task.kind` set: params.yaml's defaults for everything else
(learning rate and epochs auto, the model's own image size unless --set says otherwise), through the stages
`dvc repro` runs (the functions the DVC stages call). Prints the test metric against the kind's baseline and what
`auto` chose, so the README can say that the defaults beat the baseline on each kind.

usage: python benchmarks/kind_defaults.py [--kinds text-classification,token-classification,image-classification,
                                           text-regression] [--set preprocess.image_size=64] [--json FILE]
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
KINDS = "text-classification,token-classification,image-classification,text-regression"


def params(kind: str, settings: list[str]):
    import yaml

    from tasks.config import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["task"]["kind"] = kind
    for item in settings:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        raw[section][name] = yaml.safe_load(value)
    return parse_params(raw, source=f"params.yaml + task.kind {kind}")


def run_kind(kind: str, settings: list[str]) -> dict:
    from tasks.kinds import get_kind
    from tasks.scoring import gain
    from tasks.stages import evaluate, prepare, preprocess, train, validate

    cfg, k = params(kind, settings), get_kind(kind)
    work = Path(tempfile.mkdtemp(prefix=f"default-{kind}-"))
    start = time.perf_counter()
    prepare.run(cfg.data, work / "raw.parquet", work / "batches", kind=k)
    validate.run(cfg.data, cfg.validate_, work / "raw.parquet", work / "ok.parquet", work / "q.csv", work / "v.json",
                 source=k.source_label(cfg.data), kind=k)
    processed = preprocess.run(cfg.preprocess, cfg.train.model, work / "ok.parquet", work / "processed",
                               None, cfg.retrain.replay_share, kind=k).output_dir
    result = train.run(cfg.train, processed, work / "model", work / "train", None, kind=k)
    metrics = evaluate.run(cfg.evaluate, processed, work / "model", work / "metrics.json", None,
                           seed=cfg.train.seed, base_model=cfg.train.model, kind=k,
                           precision=cfg.inference.precision)
    headline = k.headline
    model, base = metrics["model"][headline], metrics[k.baseline_name][headline]
    return {"kind": kind, "metric": headline, "model": model, "baseline": base,
            "beats_baseline": gain(headline, model, base) > 0, "baseline_name": k.baseline_description,
            "learning_rate": result.learning_rate, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason, "precision": result.precision, "n_test": metrics["n_test"],
            "seconds": time.perf_counter() - start, "model_scores": metrics["model"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=KINDS)
    ap.add_argument("--set", action="append", default=[], help="section.key=value, as tuneline run -S")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for kind in args.kinds.split(","):
        row = run_kind(kind, args.set)
        rows.append(row)
        print(f"{kind:22s} test {row['metric']} {row['model']:.4f} vs {row['baseline_name']} {row['baseline']:.4f}: "
              f"{'beats' if row['beats_baseline'] else 'does NOT beat'} it | lr auto {row['learning_rate']:.3g}, "
              f"epochs {row['epochs_run']} (best {row['best_epoch']}, {row['stop_reason']}), {row['precision']}, "
              f"{row['n_test']} test rows, {row['seconds']:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

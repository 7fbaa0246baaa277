"""Monitoring speed: (1) a new 1k-row labelled batch -> drift decision with the default model, in a fresh process;
(2) the drift report for N vs N rows, model inference excluded, tuneline's settings beside Evidently's defaults on the
same columns (Evidently's default methods and its EmbeddingsDrift metric, whose report fits a t-SNE), with the ratio.

usage: python benchmarks/monitor_latency.py [--batch-rows 1000] [--report-rows 10000] [--production models/production]
(1) uses the production model of `make run` (fine-tuned MiniLM, its reference profile and test macro-F1) when
--production exists, else the packaged MiniLM with a seeded head; the batch is fresh airline tweets. (2) uses the
packaged MiniLM with a seeded head (the report's cost does not depend on how well the model was trained).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

LABELS = ["negative", "neutral", "positive"]


def tweets():
    from tasks.config import DataConfig
    from tasks.kinds.text import TextKind

    cfg = DataConfig(embedded_topic_pattern=None)
    df = TextKind().read_source(cfg)
    airline = df["text"].str.contains(DataConfig().embedded_topic_pattern, case=False)
    return df[airline].sample(frac=1, random_state=0), df[~airline].sample(frac=1, random_state=1)


def production_project(root: Path, reference, production: Path) -> tuple[Path, str]:
    """A project with a production v1: the given production model (its profile and test macro-F1 kept), or MiniLM
    with a seeded head profiled on `reference`."""
    import torch

    from tasks.monitoring import profile
    from tasks.config import TrainConfig
    from tasks.train import build_model
    from tasks.predict import Predictor
    from tasks.registry.store import Registry

    root.mkdir(parents=True, exist_ok=True)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True)
    (root / "params.yaml").write_text("{}\n")
    registry = Registry(root / "models/registry", root / "models/production")
    if (production / "reference_profile.parquet").exists():
        record = json.loads((production / "record.json").read_text())
        registry.promote(production, {**record, "version": 1}, (production / "README.md").read_text())
        return root, f"production v{record['version']} of {production} (test macro-F1 {record['metrics']['macro_f1']:.4f})"
    torch.manual_seed(0)
    model, tokenizer = build_model(TrainConfig(), LABELS)
    model_dir = root / "candidate"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    ref = profile.build(Predictor(model_dir, 64, 64), reference["text"].tolist(), reference["label"].tolist())
    ref.to_parquet(root / "reference.parquet")
    record = {"version": 1, "metrics": {}, "decision": {"promoted": True, "reasons": []}}
    registry.promote(model_dir, record, "card", {"reference_profile.parquet": root / "reference.parquet"})
    return root, "packaged MiniLM with a seeded head"


DECISION = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from pathlib import Path
    from tasks.monitoring import monitor
    from tasks.config import load_params
    from tasks.paths import ProjectPaths
    paths = ProjectPaths(Path(sys.argv[1]))
    outcome = monitor.process_file(load_params(paths.params), paths, Path(sys.argv[2]))
    print(json.dumps({"seconds": time.perf_counter() - start, "retrain": outcome.decision.retrain,
                      "drift_share": outcome.summary.drift_share, "drifted": outcome.summary.drifted,
                      "live_macro_f1": outcome.summary.live["macro_f1"], "reasons": outcome.decision.reasons}))
""")


def decision_latency(rows: int, airline, work: Path, production: Path) -> dict:
    project, model = production_project(work / "project", airline.iloc[:1000], production)
    batch = work / "batch.csv"
    airline.iloc[1000:1000 + rows][["text", "label"]].rename(columns={"label": "sentiment"}).to_csv(batch, index=False)
    out = subprocess.run([sys.executable, "-c", DECISION, str(project), str(batch)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, TQDM_DISABLE="1"))
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "model": model}


def report_times(rows: int, airline, other) -> dict:
    import torch
    from evidently import Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    from tasks.monitoring import drift
    from tasks.monitoring import profile
    from tasks.config import TrainConfig
    from tasks.train import build_model
    from tasks.predict import Predictor

    torch.manual_seed(0)
    model, tokenizer = build_model(TrainConfig(), LABELS)
    model_dir = Path(tempfile.mkdtemp())
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    predictor = Predictor(model_dir, 64, 128)
    reference = profile.build(predictor, airline["text"].iloc[:rows].tolist(), airline["label"].iloc[:rows].tolist())
    current = profile.build(predictor, other["text"].iloc[:rows].tolist(), other["label"].iloc[:rows].tolist())
    drift.check(reference.iloc[:200], current.iloc[:200])  # warm-up: Evidently's imports are not the report's cost

    start = time.perf_counter()
    ours = drift.check(reference, current)
    ours_s = time.perf_counter() - start

    from evidently import DataDefinition

    columns = [c.column for c in ours.columns if c.column != drift.EMBEDDINGS]
    emb = profile.embedding_columns(reference)
    definition = DataDefinition(text_columns=["text"], categorical_columns=["predicted_label", "label"],
                                numerical_columns=[c for c in columns if c not in ("text", "predicted_label", "label")]
                                + emb, embeddings={drift.EMBEDDINGS: emb})
    keep = columns + emb
    start = time.perf_counter()
    Report([ValueDrift(column=c) for c in columns] + [EmbeddingsDrift(embeddings_name=drift.EMBEDDINGS)]).run(
        current_data=Dataset.from_pandas(current[keep], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[keep], data_definition=definition))
    base_s = time.perf_counter() - start
    return {"rows": rows, "tuneline_s": ours_s, "evidently_defaults_s": base_s, "ratio": base_s / ours_s,
            "drift_share": ours.drift_share, "drifted": ours.drifted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-rows", type=int, default=1000)
    ap.add_argument("--report-rows", type=int, default=10000)
    ap.add_argument("--production", type=Path, default=Path("models/production"))
    args = ap.parse_args()
    airline, other = tweets()
    with tempfile.TemporaryDirectory() as tmp:
        d = decision_latency(args.batch_rows, airline, Path(tmp), args.production.resolve())
    print(f"1) {args.batch_rows}-row labelled same-topic batch -> decision with {d['model']}, fresh process (imports, "
          f"validation, storage + dvc add, inference, drift, decision): {d['seconds']:.1f} s; retrain={d['retrain']}, "
          f"drift share {d['drift_share']:.2f}, drifted {d['drifted'] or 'none'}, live macro-F1 "
          f"{d['live_macro_f1']:.4f}")
    for reason in d["reasons"]:
        print(f"   - {reason}")
    r = report_times(args.report_rows, airline, other)
    print(f"2) drift report {r['rows']} vs {r['rows']} rows, inference excluded: tuneline {r['tuneline_s']:.1f} s, "
          f"Evidently defaults on the same columns {r['evidently_defaults_s']:.1f} s -> {r['ratio']:.1f}x faster "
          f"(drift share {r['drift_share']:.2f}: {', '.join(r['drifted'])})")


if __name__ == "__main__":
    main()

"""Monitoring speed: (1) a new 1k-row labelled batch of long texts -> drift decision, end to end through the CLI a user
runs (`tuneline monitor FILE --no-retrain`: process start, Prefect flow and its temporary server, validation, storage
+ dvc add, inference, drift report, decision), against the 30 s goal, with the in-process work beside it; (2) the
drift report for N vs N rows, model inference excluded, tuneline's settings beside Evidently's defaults on the same
columns (Evidently's default methods and its EmbeddingsDrift metric, whose report fits a t-SNE), with the ratio.

usage: python benchmarks/monitor_latency.py [--batch-rows 1000] [--join 5] [--report-rows 10000]
                                            [--production models/production] [--skip-report]
(1) uses the production model of `make run` (fine-tuned MiniLM, its reference profile and test macro-F1) when
--production exists, else the packaged MiniLM with a seeded head; the batch rows are `--join` tweets of other topics
joined into one text each (about 75 words: review-length texts). (2) uses the packaged MiniLM with a seeded head (the
report's cost does not depend on how well the model was trained).
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
    from tasks.stages.train import build_model
    from tasks.inference import Predictor
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
    from tasks import intake
    from tasks.config import load_params
    from tasks.paths import ProjectPaths
    paths = ProjectPaths(Path(sys.argv[1]))
    outcome = intake.process_file(load_params(paths.params), paths, Path(sys.argv[2]))
    print(json.dumps({"seconds": time.perf_counter() - start, "retrain": outcome.decision.retrain,
                      "drift_share": outcome.summary.drift_share, "drifted": outcome.summary.drifted,
                      "live_macro_f1": outcome.summary.live["macro_f1"], "reasons": outcome.decision.reasons}))
""")


GOAL_S = 30.0
MILESTONES = ("Beginning flow run", "process-batch", "Finished in state", "decision:")


def long_texts(other, rows: int, join: int):
    """`rows` texts of `join` tweets each (labelled by the first): review-length rows from the embedded corpus."""
    import pandas as pd

    picked = other.iloc[:rows * join]
    texts = [" ".join(picked["text"].iloc[i * join:(i + 1) * join]) for i in range(rows)]
    return pd.DataFrame({"text": texts, "sentiment": picked["label"].iloc[::join].tolist()[:rows]})


def timed_cli(cmd: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Wall time of a command from process start, and when each milestone line of its output appeared."""
    start = time.perf_counter()
    seen = []
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # as a user without `tuneline serve`
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(env, TQDM_DISABLE="1")) as proc:
        for line in proc.stdout:
            if any(m in line for m in MILESTONES):
                seen.append((time.perf_counter() - start, line.strip()[:150]))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {seen}")
    return time.perf_counter() - start, seen


def decision_latency(rows: int, join: int, airline, other, work: Path, production: Path) -> dict:
    """The CLI end to end on one project, then the in-process work (process_file) on a copy made before it."""
    import shutil

    project, model = production_project(work / "project", airline.iloc[:1000], production)
    shutil.copytree(project, work / "inprocess", symlinks=True)
    batch = work / "batch.csv"
    long_texts(other, rows, join).to_csv(batch, index=False)
    words = long_texts(other, rows, join)["text"].str.split().str.len().median()
    cli_s, milestones = timed_cli([str(Path(sys.executable).parent / "tuneline"), "monitor", str(batch),
                                   "--no-retrain"], project)
    out = subprocess.run([sys.executable, "-c", DECISION, str(work / "inprocess"), str(batch)], capture_output=True,
                         text=True, check=True, env=dict(os.environ, TQDM_DISABLE="1"))
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "model": model, "cli_s": cli_s,
            "milestones": milestones, "median_words": words}


def report_times(rows: int, airline, other) -> dict:
    import torch
    from evidently import Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    from tasks.monitoring import drift
    from tasks.monitoring import profile
    from tasks.config import TrainConfig
    from tasks.stages.train import build_model
    from tasks.inference import Predictor

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
    ap.add_argument("--join", type=int, default=5, help="tweets joined into one batch row (5: about 75 words)")
    ap.add_argument("--report-rows", type=int, default=10000)
    ap.add_argument("--production", type=Path, default=Path("models/production"))
    ap.add_argument("--skip-report", action="store_true", help="only (1)")
    args = ap.parse_args()
    airline, other = tweets()
    with tempfile.TemporaryDirectory() as tmp:
        d = decision_latency(args.batch_rows, args.join, airline, other, Path(tmp), args.production.resolve())
    print(f"1) `tuneline monitor FILE --no-retrain`, {args.batch_rows} labelled rows of other topics, median "
          f"{d['median_words']:.0f} words, {d['model']}:")
    for at, line in d["milestones"]:
        print(f"   {at:6.1f} s  {line}")
    print(f"   end to end (process start to exit): {d['cli_s']:.1f} s = {d['cli_s'] / GOAL_S:.2f}x the {GOAL_S:.0f} s "
          f"goal ({'met' if d['cli_s'] <= GOAL_S else 'NOT met'})")
    print(f"   beside it, the same work in one warm-started process (intake.process_file, imports included, no "
          f"Prefect): {d['seconds']:.1f} s; the CLI costs {d['cli_s'] / d['seconds']:.2f}x that")
    print(f"   retrain={d['retrain']}, drift share {d['drift_share']:.2f}, drifted {d['drifted'] or 'none'}, live "
          f"macro-F1 {d['live_macro_f1']:.4f}")
    for reason in d["reasons"]:
        print(f"   - {reason}")
    if args.skip_report:
        return
    r = report_times(args.report_rows, airline, other)
    print(f"2) drift report {r['rows']} vs {r['rows']} rows, inference excluded: tuneline {r['tuneline_s']:.1f} s, "
          f"Evidently defaults on the same columns {r['evidently_defaults_s']:.1f} s -> {r['ratio']:.1f}x faster "
          f"(drift share {r['drift_share']:.2f}: {', '.join(r['drifted'])})")


if __name__ == "__main__":
    main()

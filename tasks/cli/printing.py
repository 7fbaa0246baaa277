"""What the CLI prints after a flow: the stages run, the gate's decision, the training summary and where the outputs
are."""
from __future__ import annotations

import json
from pathlib import Path

from tasks.metrics import baseline_of
from tasks.scoring import fmt, gain, metric_name


def training_stop(project_dir: Path) -> list[str]:
    """The training summary's stop reason (reports/train/metrics.json), as one line."""
    from tasks.config import load_params
    from tasks.engine.stopping import describe_stop

    path = project_dir / "reports/train/metrics.json"
    train = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if "stop_reason" not in train:
        return []
    patience = load_params(project_dir / "params.yaml").train.early_stopping_patience
    why = describe_stop(train["stop_reason"], int(train["epochs_run"]), int(train["best_epoch"]), patience,
                        metric_name(train.get("val_metric", "macro_f1")))
    return [f"training: {why}"]


def outputs_summary(project_dir: Path, result: dict) -> str:
    metrics = json.loads((project_dir / "reports/metrics.json").read_text(encoding="utf-8"))
    baseline = baseline_of(metrics)
    headline = metrics.get("headline", "macro_f1")
    model, base = metrics["model"][headline], baseline.scores[headline]
    verdict = "beats" if gain(headline, model, base) > 0 else "does NOT beat"
    root = project_dir.resolve()
    decision = []
    if "version" in result:
        outcome = "PROMOTED" if result["promoted"] else "REJECTED"
        production = "none" if result["production_version"] is None else f"v{result['production_version']}"
        headline = (f"decision: unchanged; production is {production}" if result.get("unchanged")
                    else f"decision: candidate v{result['version']} {outcome}; production is {production}")
        decision = [headline,
                    *[f"  - {r}" for r in result["reasons"]],
                    f"production:     {root / 'models/production'}   (tuneline models; tuneline predict)"]
    return "\n".join([
        f"stages run: {', '.join(result['ran']) or 'none'}; unchanged: {', '.join(result['skipped']) or 'none'}",
        *decision, *training_stop(project_dir),
        f"test {metric_name(headline)}: model {model:.4f} vs {baseline.description} {base:.4f} "
        f"(model {verdict} the baseline)",
        f"candidate:      {root / 'models/candidate'}",
        f"test metrics:   {root / 'reports/metrics.json'}   (dvc metrics show)",
        f"plots:          {root / 'reports/train'}, {root / 'reports/eval'}   (dvc plots show)",
        f"validation:     {root / 'reports/validation.json'}, quarantine: {root / 'data/validated/quarantine.csv'}",
    ])


def models_table(registry) -> list[str]:
    """`tuneline models`: every version with its metrics, lineage and decision, then the rollbacks."""
    current = registry.production_version()
    row = "{:<8} {:<10} {:>8} {:>8} {:<6} {:<16} {:<8} {:<8}"
    lines = [f"tuneline models ({registry.root}); production: v{current}",
             row.format("version", "status", "metric", "value", "parent", "created (UTC)", "data", "commit")]
    for r in registry.records():
        status = "production" if r["version"] == current else ("archived" if r["decision"]["promoted"] else "rejected")
        commit = (r["code"].get("commit") or "-")[:7] + ("*" if r["code"].get("dirty") else "")
        metric = r["decision"].get("metric") or "macro_f1"  # what the gate compared it by
        lines.append(row.format(f"v{r['version']}", status, metric_name(metric), fmt(r["metrics"].get(metric)),
                                f"v{r['parent']}" if r["parent"] else "-",
                                r["created"][:16].replace("T", " "), (r["data"].get("processed_data") or "-")[:7],
                                commit))
    lines.append("data = DVC hash of data/processed; * = code had uncommitted changes")
    lines += [f"v{r['version']} ({r.get('kind', 'text-classification')}): " + "; ".join(r["decision"]["reasons"])
              for r in registry.records()]
    lines += [f"{e['time']}: rolled back from v{e['from_version']} to v{e['version']}"
              for e in registry.events() if e["event"] == "rolled_back"]
    return lines

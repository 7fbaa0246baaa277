"""Promotion: compare the candidate with production on the same test rows, then promote (atomically) or reject,
recording why, with lineage and a model card; and the decision as markdown for the Prefect UI.

Not a DVC stage: it changes production state, so it runs through `tasks/changes.py:promote` (the flows and
`tuneline promote`), after `evaluate`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.config import Params
from tasks.kinds import get_kind, resolve_model
from tasks.kinds.base import SOURCE_ORIGIN, Kind, raw_rows, read_split
from tasks.metrics import baseline_of, scores_by_origin
from tasks.registry import gate, lineage
from tasks.registry.card import model_card
from tasks.files.weights import weight_file_hashes, weights_sha256
from tasks.registry.store import REFERENCE_FILE, Registry, now


SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "per_class", "expected_calibration_error", "rmse", "mae", "r2",
                "spearman", "answer_f1", "exact_match", "chrf", "rouge_l", "eval_loss", "perplexity", "cut_off_share")


@dataclass
class PromotionResult:
    version: int
    promoted: bool
    reasons: list[str]
    production_version: Optional[int]  # after the decision
    candidate: dict
    production: Optional[dict]  # the previous production model's scores on the same rows
    metric: str = "macro_f1"  # the gate's primary metric
    unchanged: bool = False  # the candidate is already production: nothing was gated or recorded


def predictions_of(model_dir: Path, kind: Kind, test: pd.DataFrame, max_length: int, batch_size: int,
                   precision: str = "auto") -> np.ndarray:
    """A saved model's predictions as label names, encoded with its own processor (labels are matched by name)."""
    from tasks.inference import Predictor  # torch: only a promotion that re-scores production pays for it

    predictor = Predictor(model_dir, max_length, batch_size, precision=precision)
    return predictor.predict(raw_rows(kind, test), desc="score production").rows


def test_sets(candidate: dict, production: dict, pool: list[str]) -> dict[str, tuple[dict, dict]]:
    """Once batches are pooled: the old test rows and the newest batch's holdout, each gated on its own."""
    if not pool:
        return {}
    named = {SOURCE_ORIGIN: "old test rows", pool[-1]: f"holdout of batch {pool[-1]}"}
    return {label: (candidate[origin], production[origin]) for origin, label in named.items()
            if origin in candidate and origin in production}


def gate_metric(setting: str, kind: Kind) -> str:
    """promote.metric for this kind: auto = the kind's headline (macro_f1; rmse for regression); an explicit metric
    must be one the kind scores."""
    from tasks.config import ConfigError

    if setting == "auto":
        return kind.headline
    if setting not in kind.gate_metrics:
        raise ConfigError(f"promote.metric {setting}: a {kind.name} model is scored by "
                          f"{', '.join(kind.gate_metrics)} (or auto)")
    return setting


TRAINING_KEYS = ("learning_rate", "batch_size", "epochs_run", "best_epoch", "stop_reason", "precision", "val_metric",
                 "best_val_score")


def training_summary(project_dir: Path) -> dict:
    """What the training run used and chose (a learning rate or batch size `auto` picked, the epochs it ran), from
    its dvclive summary; empty when the run left none."""
    path = project_dir / "reports/train/metrics.json"
    found = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return {k: found[k] for k in TRAINING_KEYS if k in found}


def summary(metrics: Optional[dict]) -> Optional[dict]:
    return None if metrics is None else {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}


def run(params: Params, processed_dir: str | Path, candidate_dir: str | Path, metrics_path: str | Path,
        registry: Registry, project_dir: str | Path = ".", reference_profile: Optional[Path] = None) -> PromotionResult:
    processed = Path(processed_dir)
    registry.repair()  # a promotion killed part way is finished or undone before this one is numbered
    labels = json.loads((processed / "labels.json").read_text(encoding="utf-8"))
    evaluation = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    candidate = evaluation["model"]  # evaluate scored it on exactly these test rows
    parent = registry.production_version()
    fingerprint = weights_sha256(Path(candidate_dir))
    # A rerun with nothing changed must not mint a new version: the candidate is production already, or it was
    # rejected against this same production (gating it again could only repeat the verdict).
    seen = next((r for r in registry.records() if r.get("weights_sha256") == fingerprint and
                 (r["version"] == parent or (not r["decision"]["promoted"] and r["parent"] == parent))), None)
    if seen is not None:
        why = (f"the candidate is production v{parent} already: nothing to promote" if seen["version"] == parent else
               f"the candidate was rejected before as v{seen['version']} against production v{parent}: nothing to do")
        return PromotionResult(seen["version"], False, [why], parent, summary(candidate), None,
                               gate_metric(params.promote.metric, get_kind(params.task.kind)), unchanged=True)
    production, sets = None, {}
    kind = get_kind(params.task.kind)
    metric = gate_metric(params.promote.metric, kind)
    production_kind = next((r.get("kind", "text-classification") for r in registry.records()
                            if r["version"] == parent), kind.name)
    comparable = parent is not None and production_kind == kind.name
    if comparable:
        test = read_split(processed / "test.parquet")
        y_pred = predictions_of(registry.production, kind, test, params.preprocess.max_length,
                                params.evaluate.batch_size, params.inference.precision)
        y_true = kind.truth(test)
        production = kind.scores(y_true, y_pred, labels)
        sets = test_sets(evaluation.get("by_origin", {}), scores_by_origin(kind, test, y_true, y_pred, labels),
                         params.data.batches)
    baseline = baseline_of(evaluation)
    decision = gate.decide(candidate, production, params.promote, sets, (baseline.description, baseline.scores),
                           metric)
    if parent is not None and not comparable:  # the project's task changed: nothing to compare the candidate with
        verdict = "is promoted" if decision.promote else "is not promoted"
        decision.reasons[0] = (f"production v{parent} is a {production_kind} model and this candidate is "
                               f"{kind.name}: the first {kind.name} candidate {verdict} (tuneline rollback "
                               f"v{parent} restores the previous one)")
    record = {
        "version": registry.next_version(), "created": now(), "parent": parent, "weights_sha256": fingerprint,
        "weights_files": weight_file_hashes(Path(candidate_dir)),
        "kind": kind.name, "base_model": params.train.model if params.train.model != "default" else
        f"{kind.default_model_description()} (packaged: {Path(resolve_model('default', kind)).name})",
        "data_source": kind.source_label(params.data), "data": lineage.data_hashes(project_dir),
        "code": lineage.code_commit(project_dir), "params": params.model_dump(by_alias=True),
        "metrics": {**summary(candidate), "n_test": evaluation["n_test"]},
        "training": training_summary(Path(project_dir)),
        "compared_with": {"version": parent, "metrics": summary(production)},
        "decision": {"promoted": decision.promote, "reasons": decision.reasons, "metric": metric,
                     "min_delta": params.promote.min_delta, "max_class_drop": params.promote.max_class_drop,
                     "min_over_baseline": params.promote.min_over_baseline},
        "baseline": {"name": baseline.name, "description": baseline.description, "metrics": summary(baseline.scores)},
    }
    if decision.promote:
        extra = {REFERENCE_FILE: reference_profile} if reference_profile and reference_profile.exists() else None
        registry.promote(Path(candidate_dir), record, model_card(record, baseline), extra)
    else:
        registry.reject(record)
    return PromotionResult(record["version"], decision.promote, decision.reasons, registry.production_version(),
                           summary(candidate), summary(production), metric)


def decision_markdown(result: PromotionResult) -> str:
    metric = result.metric
    if result.unchanged:
        return f"# No new candidate\n\n{result.reasons[0]}"
    verdict = "PROMOTED" if result.promoted else "REJECTED"
    production = "none" if result.production_version is None else f"v{result.production_version}"
    lines = [f"# Candidate v{result.version}: {verdict}", "", f"Production is now {production}.", "",
             "## Reasons", *[f"- {r}" for r in result.reasons]]
    if result.production is not None:
        lines += ["", "| class | candidate F1 | production F1 |", "|---|---|---|"]
        lines += [f"| {name} | {v['f1-score']:.4f} | {result.production['per_class'][name]['f1-score']:.4f} |"
                  for name, v in result.candidate.get("per_class", {}).items()]
        lines += [f"| **{metric}** | **{result.candidate[metric]:.4f}** | **{result.production[metric]:.4f}** |"]
    return "\n".join(lines)

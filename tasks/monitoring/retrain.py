"""Retraining plan: the training pool grows by the accepted labelled batches waiting outside it.

The pool is the param `data.batches` (content-addressed batch ids), so the new data version is a params change that
DVC tracks: `dvc repro` then reruns prepare onward, and `dvc params diff` shows which batches joined. The training
flow applies the plan's overrides, reproduces the stages and gates the candidate against production.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tasks.monitoring.batches import BatchInfo, BatchStore
from tasks.config import Params
from tasks.paths import ProjectPaths
from tasks.registry.store import Registry


@dataclass
class RetrainPlan:
    joining: list[BatchInfo] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.overrides)


def plan(params: Params, store: BatchStore, registry: Registry, root: Path, force: bool = False) -> RetrainPlan:
    """What to retrain on: every labelled batch not yet pooled; with retrain.init production, warm-start from it."""
    joining = store.pending_labelled(params.data.batches, params.task.kind)
    if not joining and not force:
        return RetrainPlan(reasons=["no labelled batch waits outside the training pool: nothing new to train on"])
    overrides = {"data.batches": [*params.data.batches, *(b.id for b in joining)]}
    reasons = [f"batch {b.id} joins the training pool ({b.rows_accepted} labelled rows from {b.source})"
               for b in joining]
    version = registry.production_version()
    if params.retrain.init == "production" and version is not None:
        # The version directory, not the production link: DVC sees a new param value when production moves on.
        overrides["train.model"] = os.path.relpath(registry.version_dir(version), root)
        reasons.append(f"warm start from production v{version}, replaying {params.retrain.replay_share:.0%} of "
                       "the old training rows")
    return RetrainPlan(joining, overrides, reasons)


def plan_for_project(paths: ProjectPaths, force: bool = False) -> RetrainPlan:
    from tasks.config import load_params

    return plan(load_params(paths.params), BatchStore(paths.batches), Registry(paths.registry, paths.production),
                paths.root, force)


def plan_markdown(p: RetrainPlan, result: Optional[dict]) -> str:
    lines = ["# Retraining", "", *[f"- {r}" for r in p.reasons]]
    if result is not None and "version" in result:
        verdict = ("unchanged" if result.get("unchanged") else
                   f"candidate v{result['version']} {'PROMOTED' if result['promoted'] else 'REJECTED'}")
        lines += ["", f"## Gate: {verdict}; production is v{result['production_version']}", "",
                  *[f"- {r}" for r in result["reasons"]]]
    return "\n".join(lines)


def run_summary(p: RetrainPlan, result: Optional[dict]) -> dict:
    return {"retrained": result is not None, "joined": [b.id for b in p.joining], "reasons": p.reasons,
            **({"training": result} if result is not None else {})}

"""Promotion gate: promote only if the candidate beats evaluate's simple baseline by min_over_baseline (the first
candidate too), the primary metric improves on production by min_delta, no class's F1 drops too far (classifiers),
and on each named test set (the old test rows; the newest batch's holdout) the metric drops by no more than
max_set_drop. "Improves" and "drops" follow the metric's direction (scoring.py): a lower RMSE is a gain.

Both score dicts must come from the same test rows (see promotion.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tasks.config import PromoteConfig
from tasks.scoring import gain as gain_of


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


# What to try when a fine-tuned model loses to a TF-IDF-sized baseline: it is nearly always under-trained.
LOSES_TO_BASELINE_HINT = ("try more training rows (preprocess.max_train_samples), more epochs (train.max_epochs; "
                          "the training summary says whether validation was still improving), a larger "
                          "train.learning_rate on small data, or `tuneline sweep` to search these")


def versus_baseline(candidate: dict, baseline: tuple[str, dict], metric: str, margin: float) -> tuple[bool, str]:
    name, scores = baseline
    gain = gain_of(metric, candidate[metric], scores[metric])
    if gain >= margin:
        return True, (f"{metric} {candidate[metric]:.4f} vs baseline ({name}) {scores[metric]:.4f} "
                      f"({gain:+.4f} >= min_over_baseline {margin})")
    return False, (f"{metric} {candidate[metric]:.4f} loses to the baseline ({name}) {scores[metric]:.4f} on the "
                   f"same test rows ({gain:+.4f} < min_over_baseline {margin}): {LOSES_TO_BASELINE_HINT}")


def decide(candidate: dict, production: Optional[dict], cfg: PromoteConfig,
           sets: Optional[dict[str, tuple[dict, dict]]] = None,
           baseline: Optional[tuple[str, dict]] = None, metric: Optional[str] = None) -> Decision:
    """`baseline` = (display name, scores) from evaluate, checked when cfg.min_over_baseline is not None. `metric`:
    promote.metric resolved for the kind (auto = its headline); cfg.metric when not given."""
    metric = metric or cfg.metric
    checks = []
    if baseline is not None and cfg.min_over_baseline is not None:
        checks.append(versus_baseline(candidate, baseline, metric, cfg.min_over_baseline))
    beats_baseline = all(ok for ok, _ in checks)
    if production is None:
        first = ("no production model yet: the first candidate is promoted" if beats_baseline else
                 "no production model yet, but the first candidate is not promoted")
        return Decision(beats_baseline, [first] + [why for _, why in checks])
    decision = against_production(candidate, production, cfg, sets, metric)
    return Decision(decision.promote and beats_baseline, [why for _, why in checks] + decision.reasons)


def against_production(candidate: dict, production: dict, cfg: PromoteConfig,
                       sets: Optional[dict[str, tuple[dict, dict]]], metric: Optional[str] = None) -> Decision:
    metric = metric or cfg.metric
    gain = gain_of(metric, candidate[metric], production[metric])
    better = "" if gain_of(metric, 1.0, 0.0) > 0 else "; lower is better"
    reasons, ok = [], True
    if gain >= cfg.min_delta:
        reasons.append(f"{metric} {candidate[metric]:.4f} vs production {production[metric]:.4f} "
                       f"(gain +{gain:.4f} >= min_delta {cfg.min_delta}{better})")
    else:
        ok = False
        reasons.append(f"{metric} {candidate[metric]:.4f} vs production {production[metric]:.4f} "
                       f"(gain {gain:+.4f} < min_delta {cfg.min_delta}{better})")
    per_class = "per_class" in candidate and "per_class" in production  # classifiers only
    for name, stats in (candidate["per_class"] if per_class else {}).items():
        before = production["per_class"].get(name, {}).get("f1-score")
        if before is None:
            continue
        drop = before - stats["f1-score"]
        if drop > cfg.max_class_drop:
            ok = False
            reasons.append(f"class {name!r} F1 drops {before:.4f} -> {stats['f1-score']:.4f} "
                           f"(-{drop:.4f} > max_class_drop {cfg.max_class_drop})")
    if ok and per_class:
        reasons.append(f"no class F1 drops by more than {cfg.max_class_drop}")
    for name, (cand, prod) in (sets or {}).items():
        change = gain_of(metric, cand[metric], prod[metric])
        held = change >= -cfg.max_set_drop
        ok &= held
        reasons.append(f"{name}: {metric} {cand[metric]:.4f} vs production {prod[metric]:.4f} ({change:+.4f}"
                       f"{' within' if held else ' beyond'} max_set_drop {cfg.max_set_drop})")
    return Decision(ok, reasons)

"""Promotion gate: promote only if the primary metric improves by min_delta, no class's F1 drops too far, and on
each named test set (the old test rows; the newest batch's holdout) the metric drops by no more than max_set_drop.

Both score dicts must come from the same test rows (see tasks/promote.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tasks.config import PromoteConfig


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(candidate: dict, production: Optional[dict], cfg: PromoteConfig,
           sets: Optional[dict[str, tuple[dict, dict]]] = None) -> Decision:
    if production is None:
        return Decision(True, ["no production model yet: the first candidate is promoted"])
    metric = cfg.metric
    gain = candidate[metric] - production[metric]
    reasons, ok = [], True
    if gain >= cfg.min_delta:
        reasons.append(f"{metric} {candidate[metric]:.4f} vs production {production[metric]:.4f} "
                       f"(+{gain:.4f} >= min_delta {cfg.min_delta})")
    else:
        ok = False
        reasons.append(f"{metric} {candidate[metric]:.4f} vs production {production[metric]:.4f} "
                       f"({gain:+.4f} < min_delta {cfg.min_delta})")
    for name, stats in candidate["per_class"].items():
        before = production["per_class"].get(name, {}).get("f1-score")
        if before is None:
            continue
        drop = before - stats["f1-score"]
        if drop > cfg.max_class_drop:
            ok = False
            reasons.append(f"class {name!r} F1 drops {before:.4f} -> {stats['f1-score']:.4f} "
                           f"(-{drop:.4f} > max_class_drop {cfg.max_class_drop})")
    if ok:
        reasons.append(f"no class F1 drops by more than {cfg.max_class_drop}")
    for name, (cand, prod) in (sets or {}).items():
        change = cand[metric] - prod[metric]
        held = change >= -cfg.max_set_drop
        ok &= held
        reasons.append(f"{name}: {metric} {cand[metric]:.4f} vs production {prod[metric]:.4f} ({change:+.4f}"
                       f"{' within' if held else ' beyond'} max_set_drop {cfg.max_set_drop})")
    return Decision(ok, reasons)

"""Hyper-parameter sweep on DVC experiments: each trial is `dvc exp run --queue train -S key=value`, so
`dvc exp show` lists every trial with its params and metrics and `dvc exp apply NAME` restores any of them.

Trials run the pipeline up to `train` only (never `evaluate`), in DVC's temporary workspaces, and are compared by
validation macro-F1 from their own training summary (reports/train/metrics.json): the test split is not read while
choosing. The winner is applied to the workspace; the caller then runs the normal stages and the gate.
Plain functions: `tuneline sweep` and the Prefect flow `sweep` call them.
"""
from __future__ import annotations

import itertools
import json
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from tasks.scoring import higher_is_better, metric_name
from tasks.config import ConfigError, SweepConfig, load_params, parse_params
from tasks.orchestration.pipeline import LineListener, run_dvc
from tasks.params_file import set_dotted

TRAIN_SUMMARY = "reports/train/metrics.json"
# Keys a trial may change: ones that leave the validation rows as they are, so trials are compared on the same rows.
SWEEPABLE_PREFIXES = ("train.", "preprocess.augment.")
SWEEPABLE_KEYS = ("preprocess.max_train_samples",)


class SweepFailed(RuntimeError):
    """No trial produced a validation score (the message says where to look)."""


@dataclass
class Trial:
    name: str
    params: dict[str, Any]
    val_score: Optional[float] = None  # the best epoch's validation score; None: the trial failed (`dvc queue logs`)
    val_metric: str = "macro_f1"  # what val_score measures (rmse for regression: lower is better)
    best_epoch: Optional[int] = None
    epochs_run: Optional[int] = None
    stop_reason: Optional[str] = None


@dataclass
class SweepResult:
    trials: list[Trial]
    winner: Trial
    seconds: float
    skipped: list[dict] = field(default_factory=list)  # trials not started: the time budget ran out
    chosen_by: str = f"the validation score ({TRAIN_SUMMARY} of each trial); the test split is not read"


def check_grid(grid: dict[str, list[Any]], base: dict, source: str = "params.yaml") -> None:
    """Every key sweepable, every value valid: checked before any trial is queued, naming the bad key."""
    for key, values in grid.items():
        if not (key.startswith(SWEEPABLE_PREFIXES) or key in SWEEPABLE_KEYS):
            raise ConfigError(f"{source}: sweep.grid: {key}: cannot be swept: trials must be compared on the same "
                             "validation rows; sweepable: train.*, preprocess.max_train_samples, preprocess.augment.*")
        for value in values:
            tree = json.loads(json.dumps(base))
            try:
                set_dotted(tree, key, value)
            except KeyError:
                raise ConfigError(f"{source}: sweep.grid: {key}: unknown key") from None
            parse_params(tree, source=f"{source} (sweep.grid {key}={value!r})")


def plan_trials(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The grid's combinations; a seeded sample of max_trials of them when there are more."""
    keys = list(cfg.grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(cfg.grid[k] for k in keys))]
    if len(combos) > cfg.max_trials:
        combos = random.Random(cfg.seed).sample(combos, cfg.max_trials)
    return combos


def set_args(params: dict[str, Any]) -> list[str]:
    return [arg for key, value in params.items() for arg in ("-S", f"{key}={json.dumps(value)}")]


def run_trials(project_dir: str | Path, cfg: SweepConfig, on_line: Optional[LineListener] = None,
               prefix: Optional[str] = None) -> tuple[list[str], list[dict], list[dict]]:
    """Queue and run the trials in waves of `cfg.jobs` parallel DVC queue workers; no wave starts after the time
    budget. Returns (names run, their planned params, the plans skipped for time)."""
    root = Path(project_dir).resolve()
    check_grid(cfg.grid, load_params(root / "params.yaml").model_dump(by_alias=True))
    prefix = prefix or "sweep-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    plans, names, ran = plan_trials(cfg), [], []
    start = time.monotonic()
    for wave_start in range(0, len(plans), cfg.jobs):
        if cfg.time_budget_s is not None and time.monotonic() - start >= cfg.time_budget_s:
            return names, ran, plans[wave_start:]
        for i, plan in enumerate(plans[wave_start:wave_start + cfg.jobs], start=wave_start + 1):
            name = f"{prefix}-{i}"
            run_dvc(["exp", "run", "--queue", "train", "--name", name, *set_args(plan)], root, on_line)
            names.append(name)
            ran.append(plan)
        run_dvc(["exp", "run", "--run-all", "--jobs", str(cfg.jobs)], root, on_line)
    return names, ran, []


def recorded_trials(project_dir: str | Path, names: list[str], plans: list[dict]) -> list[Trial]:
    """Each trial's validation figures as DVC recorded them (`dvc exp show --json`); missing = failed."""
    shown = run_dvc(["exp", "show", "--json"], project_dir, capture=True)
    found = {}
    for baseline in json.loads(shown or "[]"):
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            summary = (rev["data"].get("metrics") or {}).get(TRAIN_SUMMARY, {}).get("data")
            if rev.get("name") in names and summary:
                found[rev["name"]] = summary
    trials = []
    for name, plan in zip(names, plans):
        s = found.get(name)
        trials.append(Trial(name, plan) if s is None else
                      Trial(name, plan, s["best_val_score"], s.get("val_metric", "macro_f1"), int(s["best_epoch"]),
                            int(s["epochs_run"]), s.get("stop_reason")))
    return trials


def choose(trials: list[Trial]) -> Trial:
    """The best validation score, in its metric's direction; the earlier trial on a tie. Reads nothing but the
    trials' validation figures."""
    scored = [t for t in trials if t.val_score is not None]
    if not scored:
        raise SweepFailed(f"no trial of {len(trials)} finished; see `dvc queue logs {trials[0].name if trials else ''}`")
    return max(scored, key=lambda t: (t.val_score if higher_is_better(t.val_metric) else -t.val_score,
                                      -trials.index(t)))


def apply_winner(project_dir: str | Path, winner: Trial) -> None:
    """`dvc exp apply`: the winner's params.yaml, dvc.lock and trained model into the workspace (train then counts
    as up to date, and evaluate/reference run on it as in any run)."""
    run_dvc(["exp", "apply", winner.name], project_dir)


def write_report(result: SweepResult, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")


def markdown(result: SweepResult) -> str:
    keys = list(result.trials[0].params) if result.trials else []
    metric = metric_name(result.winner.val_metric)
    rows = [f"| {t.name} | " + " | ".join(str(t.params[k]) for k in keys) +
            (f" | {t.val_score:.4f} | {t.best_epoch}/{t.epochs_run} | {t.stop_reason} |"
             if t.val_score is not None else " | failed | | |") + (" **winner**" if t is result.winner else "")
            for t in result.trials]
    skipped = ["", f"{len(result.skipped)} trial(s) not started: the time budget ran out."] if result.skipped else []
    return "\n".join([f"# Sweep: {len(result.trials)} trials in {result.seconds:.0f} s", "",
                      f"Chosen by {result.chosen_by}.", "",
                      "| trial | " + " | ".join(keys) + f" | val {metric} | best epoch | stop |",
                      "|---|" + "---|" * len(keys) + "---|---|---|", *rows, *skipped, "",
                      "Every trial is a DVC experiment: `dvc exp show`, `dvc exp apply NAME`."])


def project_config(project_dir: str | Path, grid: Optional[dict[str, list]] = None) -> SweepConfig:
    """params.yaml's `sweep` section, with `grid` (from the command line or a deployment parameter) replacing its
    grid when given."""
    cfg = load_params(Path(project_dir) / "params.yaml").sweep
    return SweepConfig.model_validate({**cfg.model_dump(), "grid": grid}) if grid else cfg


def run(project_dir: str | Path, cfg: SweepConfig, on_line: Optional[LineListener] = None,
        report: Optional[str | Path] = None) -> SweepResult:
    """Run the trials, read what DVC recorded, choose by validation; writes the report (reports/sweep.json)."""
    start = time.monotonic()
    names, plans, skipped = run_trials(project_dir, cfg, on_line)
    trials = recorded_trials(project_dir, names, plans)
    result = SweepResult(trials, choose(trials), time.monotonic() - start, skipped)
    write_report(result, report or Path(project_dir) / "reports/sweep.json")
    return result

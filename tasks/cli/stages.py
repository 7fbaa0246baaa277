"""`tuneline stage ...`: what each dvc.yaml stage runs. One command per stage, each calling that stage's `run`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tasks.cli.output import say, user_errors
from tasks.config import load_params
from tasks.scoring import metric_name

stage = typer.Typer(help="Pipeline stages (what dvc.yaml runs).", no_args_is_help=True)


@stage.callback()
def stage_process() -> None:
    """Every stage stops when the `dvc repro` that runs it dies (a killed run leaves no stage running unowned)."""
    from tasks.orchestration.signals import stop_with_owner

    stop_with_owner()
PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")


@stage.command("prepare")
@user_errors
def prepare_cmd(output: Path = typer.Option(..., help="the task kind's canonical rows (parquet)"),
                batches_dir: Path = typer.Option(Path("data/batches"), help="ingested batches (data.batches)"),
                params: Path = PARAMS):
    from tasks.stages import prepare

    cfg = load_params(params)
    r = prepare.run(cfg.data, output, batches_dir, kind=cfg.task.kind)
    filtered = f" ({r.filtered()})" if r.filtered() else ""
    say(f"prepare: {r.rows_in} rows from {r.source} -> {r.rows_out} rows in {r.output}{filtered}")


@stage.command("validate")
@user_errors
def validate_cmd(input: Path = typer.Option(...), output: Path = typer.Option(...),
                 quarantine: Path = typer.Option(..., help="CSV of rejected rows: row, rule, detail, text, label"),
                 report: Path = typer.Option(...), params: Path = PARAMS):
    from tasks.kinds import get_kind
    from tasks.kinds.base import TokenBudget
    from tasks.stages import validate

    cfg = load_params(params)
    kind = get_kind(cfg.task.kind)
    r = validate.run(cfg.data, cfg.validate_, input, output, quarantine, report, source=kind.source_label(cfg.data),
                     kind=kind, budget=TokenBudget(cfg.train.model, cfg.preprocess.max_length))
    say(f"validate: {r.rows_in} rows in, {r.rows_accepted} accepted, {r.rows_quarantined} quarantined "
        f"{r.quarantined_by_rule} (see {quarantine}); flags {r.encoding_flags or r.kind_flags}; classes {r.class_counts}")


@stage.command("preprocess")
@user_errors
def preprocess_cmd(input: Path = typer.Option(...), output_dir: Path = typer.Option(...),
                   report: Path = typer.Option(None, help="split sizes, leakage removed, token lengths (JSON)"),
                   params: Path = PARAMS):
    from tasks.stages import preprocess

    cfg = load_params(params)
    r = preprocess.run(cfg.preprocess, cfg.train.model, input, output_dir, report, cfg.retrain.replay_share,
                       kind=cfg.task.kind)
    say(f"preprocess: splits {r.sizes}, labels {r.labels}, leakage removed {r.leakage_removed}, "
        f"augmented rows {r.augmented_rows}")


@stage.command("train")
@user_errors
def train_cmd(input_dir: Path = typer.Option(...), model_dir: Path = typer.Option(...),
              metrics_dir: Path = typer.Option(...),
              checkpoint_dir: Optional[Path] = typer.Option(
                  Path(".tuneline/checkpoints/train"), help="resumable training state (outside DVC outputs)"),
              params: Path = PARAMS):
    import sys

    from tasks.engine import distributed
    from tasks.stages import train

    params_ = load_params(params)
    cfg = params_.train
    code = distributed.relaunch_under_torchrun(cfg.processes, sys.argv[1:])
    if code is not None:  # the torchrun processes did the work
        raise typer.Exit(code)
    from tasks.engine.loop import TrainingStopped
    from tasks.orchestration.signals import NAMES, StopRequest

    stop = StopRequest()
    try:
        r = train.run(cfg, input_dir, model_dir, metrics_dir, checkpoint_dir, kind=params_.task.kind,
                      stop_requested=stop.requested, generation=params_.generate)
    except TrainingStopped as stopped:
        say(f"train: {stopped} ({NAMES.get(stop.signum, 'a signal')}); the next run resumes from there")
        raise typer.Exit(128 + stop.signum)
    if distributed.is_main():
        resumed = f"; resumed at step {r.resumed_from_step}" if r.resumed_from_step else ""
        tokens = f", {r.tokens_per_s:.0f} tokens/s" if r.tokens_per_s != r.samples_per_s else ""  # images: rows
        say(f"train ({cfg.strategy}): best val {metric_name(r.val_metric)} {r.best_val_score:.4f} at epoch {r.best_epoch}/"
            f"{r.epochs_run} ({r.samples_per_s:.1f} samples/s{tokens} on {r.device} x{r.world_size}, batch "
            f"{r.batch_size}, {r.precision}){resumed}; model in {r.model_dir}")
        say(f"train: {r.stop_summary(cfg.early_stopping_patience)}")


@stage.command("evaluate")
@user_errors
def evaluate_cmd(input_dir: Path = typer.Option(...), model_dir: Path = typer.Option(...),
                 metrics: Path = typer.Option(...), plots_dir: Path = typer.Option(None), params: Path = PARAMS):
    from tasks.metrics import baseline_of
    from tasks.stages import evaluate

    cfg = load_params(params)
    m = evaluate.run(cfg.evaluate, input_dir, model_dir, metrics, plots_dir, seed=cfg.train.seed,
                     base_model=cfg.train.model, kind=cfg.task.kind, precision=cfg.inference.precision,
                     generation=cfg.generate)
    baseline = baseline_of(m)
    headline = m["headline"]
    say(f"evaluate: model {metric_name(headline)} {m['model'][headline]:.4f}, baseline ({baseline.description}) "
        f"{metric_name(headline)} {baseline.scores[headline]:.4f} on {m['n_test']} test rows")


@stage.command("reference")
@user_errors
def reference_cmd(input_dir: Path = typer.Option(...), model_dir: Path = typer.Option(...),
                  output: Path = typer.Option(..., help="reference profile (parquet) for drift monitoring"),
                  params: Path = PARAMS):
    from tasks.stages import reference

    cfg = load_params(params)
    p = reference.run(input_dir, model_dir, output, cfg.monitor.reference_rows, cfg.preprocess.seed,
                      max_length=cfg.preprocess.max_length, kind=cfg.task.kind, precision=cfg.inference.precision)
    say(f"reference: {len(p)} training rows profiled (predictions, descriptors, embeddings) -> {output}")

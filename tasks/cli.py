"""`tuneline` command line: stage commands that dvc.yaml calls, and the user-facing commands.

Glue only: each command loads params once, calls one function in tasks/ or flows/, and prints the result.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tasks.monitoring.batches import BatchRejected
from tasks.config import ConfigError, load_params
from tasks.orchestration.locking import ProjectBusy
from tasks.orchestration.pipeline import USER_ERROR_EXIT, DvcFailed
from tasks.registry.store import Registry, RegistryError
from tasks.files.tables import DataFileError
from tasks.prepare import PrepareFailed
from tasks.sweep import SweepFailed
from tasks.orchestration.storage import StorageError
from tasks.validate import ValidationFailed

app = typer.Typer(help="tuneline: fine-tune pre-trained models with DVC stages and Prefect flows.", no_args_is_help=True)
stage = typer.Typer(help="Pipeline stages (what dvc.yaml runs).", no_args_is_help=True)
app.add_typer(stage, name="stage")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

PARAMS_FILE = Path("params.yaml")
PARAMS = typer.Option(PARAMS_FILE, "--params", "-p", help="params file")
REGISTRY = typer.Option(Path("models/registry"), help="registry root (versions + events.jsonl)")
PRODUCTION = typer.Option(Path("models/production"), help="the production model (a link into the registry)")


def user_errors(fn):
    """Bad params or bad data: one clear line and exit 2, no traceback (and Prefect does not retry it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataFileError, ValidationFailed, RegistryError, FileNotFoundError, BatchRejected,
                ProjectBusy, PrepareFailed, SweepFailed, StorageError, DvcFailed) as exc:
            err.print(f"[bold red]tuneline: error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(USER_ERROR_EXIT)
    return wrapper


@stage.command("prepare")
@user_errors
def prepare_cmd(output: Path = typer.Option(..., help="the task kind's canonical rows (parquet)"),
                batches_dir: Path = typer.Option(Path("data/batches"), help="ingested batches (data.batches)"),
                params: Path = PARAMS):
    from tasks import prepare

    cfg = load_params(params)
    r = prepare.run(cfg.data, output, batches_dir, kind=cfg.task.kind)
    filtered = f" ({r.filtered()})" if r.filtered() else ""
    out.print(f"prepare: {r.rows_in} rows from {r.source} -> {r.rows_out} rows in {r.output}{filtered}")


@stage.command("validate")
@user_errors
def validate_cmd(input: Path = typer.Option(...), output: Path = typer.Option(...),
                 quarantine: Path = typer.Option(..., help="CSV of rejected rows: row, rule, detail, text, label"),
                 report: Path = typer.Option(...), params: Path = PARAMS):
    from tasks import validate
    from tasks.kinds import get_kind

    cfg = load_params(params)
    kind = get_kind(cfg.task.kind)
    r = validate.run(cfg.data, cfg.validate_, input, output, quarantine, report, source=kind.source_label(cfg.data),
                     kind=kind)
    out.print(f"validate: {r.rows_in} rows in, {r.rows_accepted} accepted, {r.rows_quarantined} quarantined "
              f"{r.quarantined_by_rule} (see {quarantine}); flags {r.encoding_flags or r.kind_flags}; "
              f"classes {r.class_counts}")


@stage.command("preprocess")
@user_errors
def preprocess_cmd(input: Path = typer.Option(...), output_dir: Path = typer.Option(...),
                   report: Path = typer.Option(None, help="split sizes, leakage removed, token lengths (JSON)"),
                   params: Path = PARAMS):
    from tasks import preprocess

    cfg = load_params(params)
    r = preprocess.run(cfg.preprocess, cfg.train.model, input, output_dir, report, cfg.retrain.replay_share,
                       kind=cfg.task.kind)
    out.print(f"preprocess: splits {r.sizes}, labels {r.labels}, leakage removed {r.leakage_removed}, "
              f"augmented rows {r.augmented_rows}")


@stage.command("train")
@user_errors
def train_cmd(input_dir: Path = typer.Option(...), model_dir: Path = typer.Option(...),
              metrics_dir: Path = typer.Option(...),
              checkpoint_dir: Optional[Path] = typer.Option(
                  Path(".tuneline/checkpoints/train"), help="resumable training state (outside DVC outputs)"),
              params: Path = PARAMS):
    import sys

    from tasks import train
    from tasks.engine import distributed

    params_ = load_params(params)
    cfg = params_.train
    code = distributed.relaunch_under_torchrun(cfg.processes, sys.argv[1:])
    if code is not None:  # the torchrun processes did the work
        raise typer.Exit(code)
    r = train.run(cfg, input_dir, model_dir, metrics_dir, checkpoint_dir, kind=params_.task.kind)
    if distributed.is_main():
        resumed = f"; resumed at step {r.resumed_from_step}" if r.resumed_from_step else ""
        tokens = f", {r.tokens_per_s:.0f} tokens/s" if r.tokens_per_s != r.samples_per_s else ""  # images: rows
        out.print(f"train ({cfg.strategy}): best val macro-F1 {r.best_val_macro_f1:.4f} at epoch "
                  f"{r.best_epoch}/{r.epochs_run} ({r.samples_per_s:.1f} samples/s{tokens} "
                  f"on {r.device} x{r.world_size}, batch {r.batch_size}){resumed}; model in {r.model_dir}")
        out.print(f"train: {r.stop_summary(cfg.early_stopping_patience)}", highlight=False)


@stage.command("evaluate")
@user_errors
def evaluate_cmd(input_dir: Path = typer.Option(...), model_dir: Path = typer.Option(...),
                 metrics: Path = typer.Option(...), plots_dir: Path = typer.Option(None), params: Path = PARAMS):
    from tasks import evaluate
    from tasks.registry.card import BASELINES

    cfg = load_params(params)
    m = evaluate.run(cfg.evaluate, input_dir, model_dir, metrics, plots_dir, seed=cfg.train.seed,
                     base_model=cfg.train.model, kind=cfg.task.kind)
    name, base = evaluate.baseline_of(m)
    out.print(f"evaluate: model macro-F1 {m['model']['macro_f1']:.4f}, baseline ({BASELINES.get(name, name)}) "
              f"macro-F1 {base['macro_f1']:.4f} on {m['n_test']} test rows")


@stage.command("reference")
@user_errors
def reference_cmd(input_dir: Path = typer.Option(...), model_dir: Path = typer.Option(...),
                  output: Path = typer.Option(..., help="reference profile (parquet) for drift monitoring"),
                  params: Path = PARAMS):
    from tasks import reference

    cfg = load_params(params)
    p = reference.run(input_dir, model_dir, output, cfg.monitor.reference_rows, cfg.preprocess.seed,
                      max_length=cfg.preprocess.max_length, kind=cfg.task.kind)
    out.print(f"reference: {len(p)} training rows profiled (predictions, descriptors, embeddings) -> {output}")


@app.command("promote")
@user_errors
def promote_cmd(input_dir: Path = typer.Option(Path("data/processed")),
                candidate: Path = typer.Option(Path("models/candidate")),
                metrics: Path = typer.Option(Path("reports/metrics.json")),
                reference: Path = typer.Option(Path("data/reference/profile.parquet"), help="stored with the version"),
                registry: Path = REGISTRY, production: Path = PRODUCTION, params: Path = PARAMS):
    """Gate the evaluated candidate against production on the same test rows; promote or reject (recorded)."""
    from tasks import promote
    from tasks.orchestration.locking import project_lock

    cfg = load_params(params)
    with project_lock(Path("."), cfg.monitor.lock_timeout_s):
        r = promote.run(cfg, input_dir, candidate, metrics, Registry(registry, production), ".", reference)
    verdict = "unchanged" if r.unchanged else ("PROMOTED" if r.promoted else "REJECTED")
    production = "none" if r.production_version is None else f"v{r.production_version}"
    out.print(f"candidate v{r.version}: {verdict}; production is {production}")
    for reason in r.reasons:
        out.print(f"  - {reason}")


@app.command("models")
@user_errors
def models_cmd(registry: Path = REGISTRY, production: Path = PRODUCTION):
    """List registered versions with key metrics, lineage and decisions."""
    from tasks.orchestration.locking import project_lock

    reg = Registry(registry, production)
    try:  # finish or undo a promotion that was killed part way, unless a run is changing the registry right now
        with project_lock(Path("."), 0):
            for line in reg.repair():
                out.print(f"repaired: {line}", highlight=False)
    except ProjectBusy:
        out.print("(a run holds the project: listed as it is now)", style="dim")
    current = reg.production_version()
    out.print(f"tuneline models ({registry}); production: v{current}", highlight=False)
    row = "{:<8} {:<10} {:>8} {:>8} {:<6} {:<16} {:<8} {:<8}"
    out.print(row.format("version", "status", "macro-F1", "accuracy", "parent", "created (UTC)", "data", "commit"),
              style="bold", highlight=False)
    for r in reg.records():
        status = "production" if r["version"] == current else ("archived" if r["decision"]["promoted"] else "rejected")
        commit = (r["code"].get("commit") or "-")[:7] + ("*" if r["code"].get("dirty") else "")
        out.print(row.format(f"v{r['version']}", status, f"{r['metrics']['macro_f1']:.4f}",
                             f"{r['metrics']['accuracy']:.4f}", f"v{r['parent']}" if r["parent"] else "-",
                             r["created"][:16].replace("T", " "), (r["data"].get("processed_data") or "-")[:7],
                             commit), highlight=False)
    out.print("data = DVC hash of data/processed; * = code had uncommitted changes", style="dim")
    for r in reg.records():
        out.print(f"v{r['version']} ({r.get('kind', 'text-classification')}): " + "; ".join(r["decision"]["reasons"]),
                  highlight=False)
    for e in reg.events():
        if e["event"] == "rolled_back":
            out.print(f"{e['time']}: rolled back from v{e['from_version']} to v{e['version']}", highlight=False)


@app.command("rollback")
@user_errors
def rollback_cmd(version: str = typer.Argument(..., help="version to restore, e.g. 2 or v2"),
                 registry: Path = REGISTRY, production: Path = PRODUCTION):
    """Point production back at an earlier promoted version (recorded as its own event)."""
    from tasks.orchestration.locking import project_lock

    reg = Registry(registry, production)
    timeout = load_params(PARAMS_FILE).monitor.lock_timeout_s if PARAMS_FILE.exists() else 0
    with project_lock(Path("."), timeout):
        before = reg.production_version()
        reg.rollback(int(version.lower().removeprefix("v")))
    out.print(f"production: v{before} -> v{reg.production_version()}")


@app.command("predict")
@user_errors
def predict_cmd(input: Path = typer.Argument(..., help="texts: CSV/Parquet/JSONL; tokens: the same, or CoNLL; "
                                                     "images: a folder or a CSV/Parquet of paths"),
                output: Path = typer.Option(..., "--output", "-o", help=".csv, .parquet or .jsonl"),
                model: Path = typer.Option(Path("models/production"), help="model directory (HF format)"),
                column: Optional[str] = typer.Option(None, "--column", "--text-column",
                                                     help="input column: text (default text), tokens or text "
                                                          "(token kind), image path (default image)"),
                batch_size: int = typer.Option(64),
                int8: bool = typer.Option(False, help="dynamic int8 quantization on CPU: faster, slightly less accurate")):
    """Predictions for every row with the production model by default: label + per-class probabilities (texts,
    images), or entities with character spans (token classification)."""
    from tasks import predict

    r = predict.run(input, output, model, column, batch_size, int8=int8)
    out.print(f"predict: {r.rows} rows -> {r.output} (labels {r.labels})")


@app.command("check-params")
@user_errors
def check_params_cmd(params: Path = PARAMS):
    """Validate params.yaml (unknown keys, wrong types) without running anything."""
    load_params(params)
    out.print(f"{params}: ok")


@app.command("run")
@user_errors
def run_cmd(project_dir: Path = typer.Option(Path("."), help="project root (holds dvc.yaml)"),
            set_: Optional[list[str]] = typer.Option(None, "--set", "-S", help="override, e.g. -S train.epochs=1")):
    """Run the `training` Prefect flow in this process (uses a running `tuneline serve` server if there is one)."""
    from tasks.orchestration import serving

    load_params(project_dir / "params.yaml")  # fail before any work
    overrides = serving.parse_overrides(set_ or [])
    server = serving.use_running_server()
    from flows.training import training

    server.ready()
    result = training(project_dir=str(project_dir), overrides=overrides)
    if "busy" in result:
        raise ProjectBusy(result["busy"])
    out.print(serving.outputs_summary(project_dir, result))


@app.command("sweep")
@user_errors
def sweep_cmd(project_dir: Path = typer.Option(Path("."), help="project root (holds dvc.yaml)"),
              grid: Optional[list[str]] = typer.Option(None, help="replace sweep.grid for this run, e.g. "
                                                                  "--grid train.learning_rate=1e-4,3e-4 (repeatable)"),
              promote: bool = typer.Option(True, help="gate (and promote) the winner after evaluating it")):
    """Try sweep.grid as DVC experiments (`dvc exp show`), choose by validation macro-F1, then run the winner through
    evaluate and the gate (the `sweep` Prefect flow, in this process)."""
    from tasks.orchestration import serving
    from tasks.sweep import markdown

    load_params(project_dir / "params.yaml")
    chosen = serving.parse_grid(grid or [])
    server = serving.use_running_server()
    from flows.sweep import sweep_flow

    server.ready()
    result = sweep_flow(project_dir=str(project_dir), grid=chosen or None, promote_model=promote)
    if "busy" in result:
        raise ProjectBusy(result["busy"])
    out.print(markdown(result["sweep"]), highlight=False)
    out.print(serving.outputs_summary(project_dir, result["training"]), highlight=False)


remote = typer.Typer(help="Shared storage: a DVC remote for data, models and the registry.", no_args_is_help=True)
app.add_typer(remote, name="remote")


@remote.command("add")
@user_errors
def remote_add_cmd(url: str = typer.Argument(..., help="s3://bucket/path, or a directory (e.g. a shared mount)"),
                   name: str = typer.Option("storage", help="the DVC remote's name"),
                   endpoint_url: Optional[str] = typer.Option(None, help="an S3-compatible store that is not AWS"),
                   project_dir: Path = typer.Option(Path("."))):
    """Set the project's default DVC remote (`dvc remote add -d`); runs then push to it after each gate decision."""
    from tasks.orchestration import storage

    storage.add_remote(project_dir, url, name, endpoint_url)
    out.print(f"default DVC remote {name!r}: {url}" + (f" (endpoint {endpoint_url})" if endpoint_url else "") +
              "; commit .dvc/config so other clones use it", highlight=False)


@app.command("push")
@user_errors
def push_cmd(project_dir: Path = typer.Option(Path("."))):
    """`dvc push` data, models and the registry to the default remote (the flows do this after each gate)."""
    from tasks.orchestration import storage

    pushed = storage.push(project_dir)
    if pushed is None:
        raise StorageError("no default DVC remote: tuneline remote add URL")
    out.print(pushed, highlight=False)


@app.command("pull")
@user_errors
def pull_cmd(project_dir: Path = typer.Option(Path("."))):
    """On a fresh clone: `dvc pull` data, models and the registry, and restore models/production."""
    from tasks.orchestration import storage

    for line in storage.pull(project_dir):
        out.print(line, highlight=False)


@app.command("ingest")
@user_errors
def ingest_cmd(path: Path = typer.Argument(..., help="a batch of new data: CSV / Parquet / JSONL, labelled or not"),
               project_dir: Path = typer.Option(Path("."))):
    """Validate a batch against the training schema and label set, and store it (DVC-versioned) if accepted."""
    from tasks.monitoring import monitor
    from tasks.monitoring.batches import BatchStore
    from tasks.orchestration.locking import project_lock
    from tasks.paths import ProjectPaths
    from tasks.orchestration.pipeline import dvc_add

    paths = ProjectPaths(project_dir.resolve())
    params = load_params(paths.params)
    with project_lock(paths.root, params.monitor.lock_timeout_s):
        registry = Registry(paths.registry, paths.production)
        b = BatchStore(paths.batches).ingest(path, params.data, params.validate_,
                                             monitor.training_labels(registry, params), kind=params.task.kind)
        dvc_add(paths.batches.relative_to(paths.root), paths.root)
    out.print(f"ingest: batch {b.id}: {b.rows_accepted} of {b.rows_in} rows accepted "
              f"({b.rows_quarantined} quarantined; {'labelled' if b.labelled else 'unlabelled'}) -> "
              f"{paths.batches / b.id}", highlight=False)
    if b.note:
        out.print(f"  note: {b.note}", highlight=False)
    out.print("  next: `tuneline monitor` checks it for drift against production", highlight=False)


@app.command("monitor")
@user_errors
def monitor_cmd(files: Optional[list[Path]] = typer.Argument(None, help="batch files; default: the drop folder"),
                project_dir: Path = typer.Option(Path(".")),
                drop_dir: Optional[Path] = typer.Option(None, help="default: data/incoming"),
                retrain: bool = typer.Option(True, help="retrain in this process when the decision says so")):
    """Run the monitoring flow once, in this process (for scripts and plain cron), then retraining if decided."""
    from tasks.monitoring import monitor
    from tasks.orchestration import serving

    server = serving.use_running_server()
    from flows.monitoring import monitoring

    monitor.preload()  # the model and drift code's imports, while the temporary server (if any) boots
    server.ready()
    summary = monitoring(project_dir=str(project_dir), drop_dir=str(drop_dir) if drop_dir else None,
                         files=[str(f) for f in files] if files else None)
    if "busy" in summary:
        raise ProjectBusy(summary["busy"])
    for line in monitor.summary_lines(summary):
        out.print(line, highlight=False)
    if retrain and summary["retrain"]:
        from flows.retraining import retraining

        result = retraining(project_dir=str(project_dir))
        out.print(serving.outputs_summary(project_dir, result["training"]), highlight=False)


@app.command("retrain")
@user_errors
def retrain_cmd(project_dir: Path = typer.Option(Path(".")),
                force: bool = typer.Option(False, help="retrain even when no new labelled batch waits")):
    """Run the retraining flow once, in this process: pool the waiting labelled batches, retrain, gate."""
    from tasks.orchestration import serving

    server = serving.use_running_server()
    from flows.retraining import retraining

    server.ready()
    result = retraining(project_dir=str(project_dir), force=force)
    if "busy" in result:
        raise ProjectBusy(result["busy"])
    for reason in result["reasons"]:
        out.print(f"- {reason}", highlight=False)
    if result["retrained"]:
        out.print(serving.outputs_summary(project_dir, result["training"]), highlight=False)


@app.command("demo-batch")
@user_errors
def demo_batch_cmd(output: Path = typer.Argument(..., help="CSV to write, e.g. data/incoming/other-topics.csv"),
                   rows: int = typer.Option(1500), topics: str = typer.Option("other", help="other | same"),
                   labelled: bool = typer.Option(True), seed: int = typer.Option(7), params: Path = PARAMS):
    """Cut a batch of new tweets from the embedded corpus: other topics (drift) or the training topic (none)."""
    from tasks.monitoring import demo

    path = demo.write_batch(load_params(params).data, output, rows, topics, seed, labelled)  # type: ignore[arg-type]
    out.print(f"demo-batch: {rows} {'labelled' if labelled else 'unlabelled'} tweets from {topics} topics -> {path}")


@app.command("serve")
def serve_cmd(project_dir: Path = typer.Option(Path("."), help="project root (holds dvc.yaml)"),
              port: int = typer.Option(4200, help="Prefect server port on 127.0.0.1"),
              detach: bool = typer.Option(False, help="start in the background; stop with `tuneline stop`"),
              monitor_cron: str = typer.Option("0 * * * *", help="monitoring/scheduled (cron, server time zone)"),
              retrain_cron: str = typer.Option("0 3 * * *", help="retraining/nightly (cron)")):
    """Start a Prefect server on 127.0.0.1 (unless one answers) and serve the deployments."""
    from tasks.orchestration import serving

    serving.serve(project_dir, port, detach, echo=out.print, crons=(monitor_cron, retrain_cron))


@app.command("deploy")
@user_errors
def deploy_cmd(pool: str = typer.Option("tuneline", help="a process work pool (created if missing)"),
               name: Optional[str] = typer.Option(None, help="deployment name for all flows (default: the pool's)"),
               source: Optional[str] = typer.Option(None, help="flow code for the workers: this checkout (default) "
                                                               "or a git URL each run clones"),
               project_dir: Optional[Path] = typer.Option(
                   None, help="the project's path on the worker machines (default: this clone's path; with a git "
                              "--source, '.': the clone each run makes)")):
    """Register the flows as deployments for a work pool on the Prefect server in PREFECT_API_URL (a shared server,
    e.g. on PostgreSQL); `tuneline worker` on any machine then runs them."""
    import os

    from flows.deployments import deploy_to_pool

    if "PREFECT_API_URL" not in os.environ:
        raise ConfigError("set PREFECT_API_URL to the shared Prefect server (see README, 'Scaling out')")
    where = str(project_dir.resolve()) if project_dir else ("." if source else str(Path(".").resolve()))
    for deployment in deploy_to_pool(where, pool, name, source):
        out.print(f"deployed {deployment} -> work pool {pool!r}", highlight=False)
    out.print(f"start a worker: tuneline worker --pool {pool}   run: prefect deployment run "
              f"'training/{name or pool}'", highlight=False)


@app.command("worker")
def worker_cmd(pool: str = typer.Option("tuneline", help="the work pool to take flow runs from")):
    """`prefect worker start --pool POOL --type process`: runs the pool's flow runs on this machine."""
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"])


@app.command("stop")
def stop_cmd(project_dir: Path = typer.Option(Path("."))):
    """Stop what `tuneline serve --detach` started (by PID)."""
    from tasks.orchestration import serving

    out.print(serving.stop(project_dir))


if __name__ == "__main__":
    app()

"""The user-facing `tuneline` commands. Each loads params once, calls one function in tasks/ or flows/ (state changes
go through tasks/changes.py), and prints the result."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tasks.cli import parsing, printing
from tasks.cli.output import say, user_errors
from tasks.cli.stages import stage
from tasks.config import ConfigError, load_params
from tasks.orchestration.locking import ProjectBusy
from tasks.orchestration.signals import stop_on_signals
from tasks.orchestration.storage import StorageError

app = typer.Typer(help="tuneline: fine-tune pre-trained models with DVC stages and Prefect flows.", no_args_is_help=True)
app.add_typer(stage, name="stage")

PROJECT = typer.Option(Path("."), "--project-dir", help="project root (holds dvc.yaml and params.yaml)")


def version_number(text: str) -> int:
    try:
        return int(text.lower().removeprefix("v"))
    except ValueError:
        raise ConfigError(f"{text!r} is not a version: give a number such as 2 or v2 (tuneline models lists them)") \
            from None


@app.command("promote")
@user_errors
def promote_cmd(project_dir: Path = PROJECT):
    """Gate the evaluated candidate against production on the same test rows; promote or reject (recorded)."""
    from tasks import changes

    r = changes.promote(project_dir)
    verdict = "unchanged" if r.unchanged else ("PROMOTED" if r.promoted else "REJECTED")
    say(f"candidate v{r.version}: {verdict}; production is "
        f"{'none' if r.production_version is None else f'v{r.production_version}'}")
    for reason in r.reasons:
        say(f"  - {reason}")


@app.command("models")
@user_errors
def models_cmd(project_dir: Path = PROJECT):
    """List registered versions with key metrics, lineage and decisions."""
    from tasks import changes
    from tasks.registry.store import Registry

    try:  # finish or undo a registry operation that was killed part way, unless a run is changing it right now
        for line in changes.repair(project_dir, wait_s=0):
            say(f"repaired: {line}")
    except ProjectBusy:
        say("(a run holds the project: listed as it is now)")
    for line in printing.models_table(Registry.of_project(project_dir)):
        say(line)


@app.command("rollback")
@user_errors
def rollback_cmd(version: str = typer.Argument(..., help="version to restore, e.g. 2 or v2"),
                 project_dir: Path = PROJECT):
    """Point production back at an earlier promoted version (recorded as its own event)."""
    from tasks import changes

    before, after = changes.rollback(project_dir, version_number(version))
    say(f"production: v{before} -> v{after}")


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
                int8: bool = typer.Option(False, help="dynamic int8 quantization on CPU: faster, slightly less accurate"),
                precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 (default: inference.precision "
                                                                   "in params.yaml, else auto)")):
    """Predictions for every row with the production model by default: label + per-class probabilities (texts,
    images), or entities with character spans (token classification)."""
    from tasks.stages import predict

    chosen = precision or (load_params(Path("params.yaml")).inference.precision if Path("params.yaml").exists()
                           else "auto")
    r = predict.run(input, output, model, column, batch_size, int8=int8, precision=chosen)
    say(f"predict: {r.rows} rows -> {r.output} (labels {r.labels})")


@app.command("check-params")
@user_errors
def check_params_cmd(params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")):
    """Validate params.yaml (unknown keys, wrong types) without running anything."""
    load_params(params)
    say(f"{params}: ok")


@app.command("run")
@user_errors
def run_cmd(project_dir: Path = PROJECT,
            set_: Optional[list[str]] = typer.Option(None, "--set", "-S", help="override, e.g. -S train.epochs=1")):
    """Run the `training` Prefect flow in this process (uses a running `tuneline serve` server if there is one)."""
    from tasks.orchestration import prefect_server

    load_params(project_dir / "params.yaml")  # fail before any work
    overrides = parsing.parse_overrides(set_ or [])
    with stop_on_signals():
        server = prefect_server.use_running_server()
        from flows.training import training

        server.ready()
        result = training(project_dir=str(project_dir), overrides=overrides)
    if "busy" in result:
        raise ProjectBusy(result["busy"])
    say(printing.outputs_summary(project_dir, result))


@app.command("sweep")
@user_errors
def sweep_cmd(project_dir: Path = PROJECT,
              grid: Optional[list[str]] = typer.Option(None, help="replace sweep.grid for this run, e.g. "
                                                                  "--grid train.learning_rate=1e-4,3e-4 (repeatable)"),
              promote: bool = typer.Option(True, help="gate (and promote) the winner after evaluating it")):
    """Try sweep.grid as DVC experiments (`dvc exp show`), choose by validation macro-F1, then run the winner through
    evaluate and the gate (the `sweep` Prefect flow, in this process)."""
    from tasks.orchestration import prefect_server
    from tasks.orchestration.sweep import markdown

    load_params(project_dir / "params.yaml")
    chosen = parsing.parse_grid(grid or [])
    with stop_on_signals():
        server = prefect_server.use_running_server()
        from flows.sweep import sweep_flow

        server.ready()
        result = sweep_flow(project_dir=str(project_dir), grid=chosen or None, promote_model=promote)
    if "busy" in result:
        raise ProjectBusy(result["busy"])
    say(markdown(result["sweep"]))
    say(printing.outputs_summary(project_dir, result["training"]))


remote = typer.Typer(help="Shared storage: a DVC remote for data, models and the registry.", no_args_is_help=True)
app.add_typer(remote, name="remote")


@remote.command("add")
@user_errors
def remote_add_cmd(url: str = typer.Argument(..., help="s3://bucket/path, or a directory (e.g. a shared mount)"),
                   name: str = typer.Option("storage", help="the DVC remote's name"),
                   endpoint_url: Optional[str] = typer.Option(None, help="an S3-compatible store that is not AWS"),
                   project_dir: Path = PROJECT):
    """Set the project's default DVC remote (`dvc remote add -d`); runs then push to it after each gate decision."""
    from tasks.orchestration import storage

    storage.add_remote(project_dir, url, name, endpoint_url)
    say(f"default DVC remote {name!r}: {url}" + (f" (endpoint {endpoint_url})" if endpoint_url else "") +
        "; commit .dvc/config so other clones use it")


@app.command("push")
@user_errors
def push_cmd(project_dir: Path = PROJECT):
    """`dvc push` data, models and the registry to the default remote (the flows do this after each gate)."""
    from tasks.orchestration import storage

    pushed = storage.push(project_dir)
    if pushed is None:
        raise StorageError("no default DVC remote: tuneline remote add URL")
    say(pushed)


@app.command("pull")
@user_errors
def pull_cmd(project_dir: Path = PROJECT):
    """On a fresh clone: `dvc pull` data, models and the registry, and restore models/production."""
    from tasks import changes

    for line in changes.pull(project_dir):
        say(line)


@app.command("ingest")
@user_errors
def ingest_cmd(path: Path = typer.Argument(..., help="a batch of new data: CSV / Parquet / JSONL, labelled or not"),
               project_dir: Path = PROJECT):
    """Validate a batch against the training schema and label set, and store it (DVC-versioned) if accepted."""
    from tasks import changes
    from tasks.paths import ProjectPaths

    b, _ = changes.ingest(project_dir, path)
    say(f"ingest: batch {b.id}: {b.rows_accepted} of {b.rows_in} rows accepted ({b.rows_quarantined} quarantined; "
        f"{'labelled' if b.labelled else 'unlabelled'}) -> {ProjectPaths(project_dir.resolve()).batches / b.id}")
    if b.note:
        say(f"  note: {b.note}")
    say("  next: `tuneline monitor` checks it for drift against production")


@app.command("monitor")
@user_errors
def monitor_cmd(files: Optional[list[Path]] = typer.Argument(None, help="batch files; default: the drop folder"),
                project_dir: Path = PROJECT,
                drop_dir: Optional[Path] = typer.Option(None, help="default: data/incoming"),
                retrain: bool = typer.Option(True, help="retrain in this process when the decision says so")):
    """Run the monitoring flow once, in this process (for scripts and plain cron), then retraining if decided."""
    from tasks.monitoring import monitor, summary as monitoring_summary
    from tasks.orchestration import prefect_server

    with stop_on_signals():
        server = prefect_server.use_running_server()
        from flows.monitoring import monitoring

        monitor.preload()  # the model and drift code's imports, while the temporary server (if any) boots
        server.ready()
        summary = monitoring(project_dir=str(project_dir), drop_dir=str(drop_dir) if drop_dir else None,
                             files=[str(f) for f in files] if files else None)
        if "busy" in summary:
            raise ProjectBusy(summary["busy"])
        for line in monitoring_summary.summary_lines(summary):
            say(line)
        if retrain and summary["retrain"]:
            from flows.retraining import retraining

            result = retraining(project_dir=str(project_dir))
            if "busy" in result:
                raise ProjectBusy(result["busy"])
            say(printing.outputs_summary(project_dir, result["training"]))


@app.command("retrain")
@user_errors
def retrain_cmd(project_dir: Path = PROJECT,
                force: bool = typer.Option(False, help="retrain even when no new labelled batch waits")):
    """Run the retraining flow once, in this process: pool the waiting labelled batches, retrain, gate."""
    from tasks.orchestration import prefect_server

    with stop_on_signals():
        server = prefect_server.use_running_server()
        from flows.retraining import retraining

        server.ready()
        result = retraining(project_dir=str(project_dir), force=force)
    if "busy" in result:
        raise ProjectBusy(result["busy"])
    for reason in result["reasons"]:
        say(f"- {reason}")
    if result["retrained"]:
        say(printing.outputs_summary(project_dir, result["training"]))


@app.command("demo-batch")
@user_errors
def demo_batch_cmd(output: Path = typer.Argument(..., help="CSV to write, e.g. data/incoming/other-topics.csv"),
                   rows: int = typer.Option(1500), topics: str = typer.Option("other", help="other | same"),
                   labelled: bool = typer.Option(True), seed: int = typer.Option(7),
                   params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")):
    """Cut a batch of new tweets from the embedded corpus: other topics (drift) or the training topic (none)."""
    from tasks.monitoring import demo

    path = demo.write_batch(load_params(params).data, output, rows, topics, seed, labelled)  # type: ignore[arg-type]
    say(f"demo-batch: {rows} {'labelled' if labelled else 'unlabelled'} tweets from {topics} topics -> {path}")


@app.command("serve")
@user_errors
def serve_cmd(project_dir: Path = PROJECT,
              host: str = typer.Option("127.0.0.1", help="address to listen on; any other than loopback requires "
                                                         "an auth string (generated into .tuneline/prefect-auth)"),
              port: int = typer.Option(4200, help="Prefect server port"),
              detach: bool = typer.Option(False, help="start in the background; stop with `tuneline stop`"),
              deployments: bool = typer.Option(True, help="also serve this project's deployments (a team server "
                                                          "with workers: --no-deployments, then tuneline deploy)"),
              monitor_cron: str = typer.Option("0 * * * *", help="monitoring/scheduled (cron, server time zone)"),
              retrain_cron: str = typer.Option("0 3 * * *", help="retraining/nightly (cron)")):
    """Start a Prefect server (unless one answers) and serve the deployments."""
    from tasks.orchestration import prefect_server

    prefect_server.serve(project_dir, port, detach, echo=say, crons=(monitor_cron, retrain_cron), host=host,
                         deployments=deployments)


@app.command("serve-model")
@user_errors
def serve_model_cmd(project_dir: Path = PROJECT,
                    host: Optional[str] = typer.Option(None, help="127.0.0.1 | 0.0.0.0 | :: (default serve.host); "
                                                                  "beyond loopback needs TUNELINE_SERVE_TOKEN"),
                    port: Optional[int] = typer.Option(None, help="default serve.port"),
                    follow_remote: Optional[float] = typer.Option(
                        None, help="pull the registry from the default DVC remote every this many seconds (replicas "
                                   "on other machines swap when a promotion is pushed)")):
    """Serve the production model over HTTP (LitServe, dynamic batching): POST /predict, /feedback; GET /health,
    /ready, /metrics, /docs. Hot-swaps on promotion, rollback and pull; logs its traffic for monitoring."""
    from tasks.serving import server

    server.serve(project_dir, load_params(project_dir / "params.yaml"), host, port, follow_remote, announce=say)


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

    from tasks.orchestration.prefect_server import use_stored_auth

    use_stored_auth(Path("."))
    from flows.deployments import deploy_to_pool

    if "PREFECT_API_URL" not in os.environ:
        raise ConfigError("set PREFECT_API_URL to the shared Prefect server (see README, 'Scaling out')")
    where = str(project_dir.resolve()) if project_dir else ("." if source else str(Path(".").resolve()))
    for deployment in deploy_to_pool(where, pool, name, source):
        say(f"deployed {deployment} -> work pool {pool!r}")
    say(f"start a worker: tuneline worker --pool {pool}   run: prefect deployment run 'training/{name or pool}'")


@app.command("worker")
def worker_cmd(pool: str = typer.Option("tuneline", help="the work pool to take flow runs from")):
    """`prefect worker start --pool POOL --type process`: runs the pool's flow runs on this machine (with the auth
    string `tuneline serve` stored for this project, or PREFECT_API_AUTH_STRING)."""
    import os
    import sys

    from tasks.orchestration.prefect_server import use_stored_auth

    use_stored_auth(Path("."))
    os.execv(sys.executable, [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"])


@app.command("stop")
def stop_cmd(project_dir: Path = PROJECT):
    """Stop what `tuneline serve --detach` started (by PID)."""
    from tasks.orchestration import prefect_server

    say(prefect_server.stop(project_dir))


if __name__ == "__main__":
    app()

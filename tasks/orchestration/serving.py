"""Start/stop a local Prefect server and the deployment-serving process; helpers for `tuneline run`.

Nothing here imports prefect at module level: PREFECT_API_URL must be settled before prefect reads its settings.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import yaml

from tasks.config import ConfigError

DEFAULT_PORT = 4200
STATE_DIR = ".tuneline"  # git-ignored: PIDs and logs of what `tuneline serve --detach` started


def api_url(port: int = DEFAULT_PORT) -> str:
    return f"http://127.0.0.1:{port}/api"


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_healthy(url: str, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_healthy(url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with {proc.returncode} before answering at {url}")
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server did not answer at {url} within {timeout:.0f} s")


def server_env(url: str, prefect_home: str | Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PREFECT_API_URL=url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def start_server(port: int, log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def start_serving(project_dir: Path, log_path: Path | None, env: dict[str, str],
                  crons: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.deployments", str(project_dir.resolve()), *crons]
    output = log_path.open("ab") if log_path else None
    return subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT if output else None, env=env,
                            cwd=project_dir, start_new_session=True)


def terminate(proc_or_pid: subprocess.Popen | int, timeout: float = 20.0) -> None:
    """SIGTERM the process group (the server has uvicorn children), then SIGKILL if it lingers."""
    pid = proc_or_pid if isinstance(proc_or_pid, int) else proc_or_pid.pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if isinstance(proc_or_pid, subprocess.Popen):
                if proc_or_pid.poll() is not None:
                    return
            else:
                os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def serve(project_dir: Path, port: int, detach: bool, echo: Callable[[str], None] = print,
          crons: tuple[str, ...] = ()) -> None:
    state = project_dir / STATE_DIR
    url = api_url(port)
    env = server_env(url)
    pids: dict[str, int] = {}
    server = None
    if is_healthy(url):
        echo(f"Prefect server already answering at {url}; using it.")
    else:
        echo(f"Starting Prefect server on 127.0.0.1:{port} (log: {state / 'server.log'}) ...")
        server = start_server(port, state / "server.log", env)
        wait_healthy(url, proc=server)
        pids["server"] = server.pid
    serving = start_serving(project_dir, state / "serve.log" if detach else None, env, crons)
    pids["serve"] = serving.pid
    echo(f"UI: http://127.0.0.1:{port}   API: {url}")
    echo(f"Run a deployment:  PREFECT_API_URL={url} prefect deployment run 'training/default'")
    echo("Also: 'monitoring/scheduled' (cron, drop folder data/incoming), 'retraining/nightly' (cron + drift events), "
         "'sweep/default' (sweep.grid as DVC experiments)")
    if detach:
        state.mkdir(parents=True, exist_ok=True)
        (state / "pids.json").write_text(json.dumps(pids), encoding="utf-8")
        echo(f"Running in the background (PIDs {pids}); stop with: tuneline stop")
        return
    echo("Serving deployments; stop with Ctrl-C (stops the server too if this command started it).")
    try:
        serving.wait()
    except KeyboardInterrupt:
        pass
    finally:
        terminate(serving)
        if server is not None:
            terminate(server)


def stop(project_dir: Path) -> str:
    pid_file = project_dir / STATE_DIR / "pids.json"
    if not pid_file.exists():
        return "nothing to stop (no .tuneline/pids.json)"
    pids = json.loads(pid_file.read_text(encoding="utf-8"))
    for name in ("serve", "server"):
        if name in pids:
            terminate(int(pids[name]))
    pid_file.unlink()
    return f"stopped {pids}"


def ensure_on_server(read: Callable, create: Callable) -> None:
    """Create a named object on the Prefect server (work pool, concurrency limit) unless it exists; another machine
    creating it meanwhile is fine. `read(client)` / `create(client)` use the sync client."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            read(client)
        except ObjectNotFound:
            try:
                create(client)
            except ObjectAlreadyExists:
                pass


class ServerStart:
    """Prefect's temporary server, starting in a thread (or nothing to wait for); `ready()` before the first flow."""

    def __init__(self, thread: Optional[threading.Thread] = None):
        self.thread, self.error = thread, None

    def ready(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error


def use_running_server(port: int = DEFAULT_PORT) -> ServerStart:
    """Send flow runs to a local `tuneline serve` server when one answers, so they show in its UI.

    Without one, Prefect starts a temporary server when the first flow begins: 5-10 s on a small CPU, spent waiting.
    It is started here instead, in a thread, so it boots (in its own process) while the command does its imports;
    call `.ready()` on the result before running a flow.
    """
    # A local tool sends no telemetry (and offline, the temporary server's heartbeat only logs lock errors).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" in os.environ:
        return ServerStart()
    if is_healthy(api_url(port), timeout=0.5):
        os.environ["PREFECT_API_URL"] = api_url(port)
        return ServerStart()
    from prefect.server.api.server import SubprocessASGIServer  # the instance Prefect's client will reuse

    start = ServerStart()

    def boot() -> None:
        try:
            SubprocessASGIServer().start()
        except Exception as exc:  # reported by ready(), in the command's own thread
            start.error = exc

    start.thread = threading.Thread(target=boot, name="prefect-temporary-server", daemon=True)
    start.thread.start()
    return start


def parse_value(text: str):
    """YAML's reading of a command-line value, except that 1e-4 is a number (YAML 1.1 wants 1.0e-4)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        overrides[key.strip()] = parse_value(value)
    return overrides


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid train.learning_rate=1e-4,3e-4` -> {"train.learning_rate": [0.0001, 0.0003]}."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {item!r} is not of the form section.key=value1,value2")
        grid[key.strip()] = [parse_value(v) for v in values.split(",")]
    return grid


def training_stop(project_dir: Path) -> list[str]:
    """The training summary's stop reason (reports/train/metrics.json), as one line."""
    from tasks.config import load_params
    from tasks.engine.loop import describe_stop

    path = project_dir / "reports/train/metrics.json"
    train = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if "stop_reason" not in train:
        return []
    patience = load_params(project_dir / "params.yaml").train.early_stopping_patience
    return [f"training: {describe_stop(train['stop_reason'], int(train['epochs_run']), int(train['best_epoch']), patience)}"]


def outputs_summary(project_dir: Path, result: dict) -> str:
    metrics = json.loads((project_dir / "reports/metrics.json").read_text(encoding="utf-8"))
    from tasks.evaluate import baseline_of
    from tasks.registry.card import BASELINES

    base_name, base_scores = baseline_of(metrics)
    model, base = metrics["model"]["macro_f1"], base_scores["macro_f1"]
    verdict = "beats" if model > base else "does NOT beat"
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
        f"test macro-F1: model {model:.4f} vs {BASELINES.get(base_name, base_name)} {base:.4f} "
        f"(model {verdict} the baseline)",
        f"candidate:      {root / 'models/candidate'}",
        f"test metrics:   {root / 'reports/metrics.json'}   (dvc metrics show)",
        f"plots:          {root / 'reports/train'}, {root / 'reports/eval'}   (dvc plots show)",
        f"validation:     {root / 'reports/validation.json'}, quarantine: {root / 'data/validated/quarantine.csv'}",
    ])

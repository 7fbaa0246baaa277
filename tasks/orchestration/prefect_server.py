"""The Prefect server's process life: `tuneline serve` (a server on this machine plus the deployment-serving process),
`tuneline stop`, and, for the CLI's flow commands, the server a run reports to (a running one, or Prefect's
temporary one booted in a thread).

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

"""The Prefect server's process life: `tuneline serve` (a server on this machine plus the deployment-serving process),
`tuneline stop`, and, for the CLI's flow commands, the server a run reports to (a running one, or Prefect's
temporary one booted in a thread).

Nothing here imports prefect at module level: PREFECT_API_URL must be settled before prefect reads its settings.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional


DEFAULT_PORT = 4200
STATE_DIR = ".tuneline"  # git-ignored: PIDs and logs of what `tuneline serve --detach` started
AUTH_FILE = ".tuneline/prefect-auth"  # user:password for a server `tuneline serve` exposed beyond this machine (0600)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def api_url(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/api"


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_auth_string(project_dir: Path) -> str:
    """The server's `user:password` (Prefect's server.api.auth_string): PREFECT_SERVER_API_AUTH_STRING when set,
    else the one stored under .tuneline/, else a new random one stored there, readable by its owner only."""
    import secrets

    given = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    if given:
        return given
    path = project_dir / AUTH_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    auth = f"tuneline:{secrets.token_urlsafe(32)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(auth + "\n")
    return auth


def use_stored_auth(project_dir: Path) -> None:
    """Clients (the CLI's flows, `tuneline worker`, `tuneline deploy`) send the auth string `tuneline serve` stored
    for this project, unless PREFECT_API_AUTH_STRING is set already."""
    path = project_dir / AUTH_FILE
    if "PREFECT_API_AUTH_STRING" not in os.environ and path.exists():
        os.environ["PREFECT_API_AUTH_STRING"] = path.read_text(encoding="utf-8").strip()


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


def server_env(url: str, prefect_home: str | Path | None = None, auth: Optional[str] = None,
               origins: Optional[str] = None) -> dict[str, str]:
    """The environment of a server and of its own clients: CSRF protection on and cross-origin requests only from
    the server's own origins (a web page the user visits cannot drive a local server), and the auth string on both
    sides when there is one."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    env = dict(os.environ, PREFECT_API_URL=url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED="true",
               PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS=os.environ.get(
                   "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS",
                   origins or f"http://127.0.0.1:{port},http://localhost:{port}"))
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    if auth is not None:
        env.update(PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_API_AUTH_STRING=auth)
    return env


def start_server(port: int, log_path: Path, env: dict[str, str], host: str = "127.0.0.1") -> subprocess.Popen:
    if not is_loopback(host) and not env.get("PREFECT_SERVER_API_AUTH_STRING"):
        raise RuntimeError(f"a Prefect server on {host} needs an auth string (PREFECT_SERVER_API_AUTH_STRING)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
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
          crons: tuple[str, ...] = (), host: str = "127.0.0.1", deployments: bool = True) -> None:
    """A Prefect server on host:port (unless one answers) and this project's deployments. On an address other than
    loopback the server requires an auth string (ensure_auth_string), and the README says to put TLS in front."""
    state = project_dir / STATE_DIR
    url = api_url(port, host)
    auth = None if is_loopback(host) else ensure_auth_string(project_dir)
    origins = None if is_loopback(host) else f"http://{socket.getfqdn()}:{port},http://127.0.0.1:{port}"
    env = server_env(url, auth=auth, origins=origins)
    pids: dict[str, int] = {}
    server = None
    if is_healthy(url):
        echo(f"Prefect server already answering at {url}; using it.")
    else:
        echo(f"Starting Prefect server on {host}:{port} (log: {state / 'server.log'}) ...")
        server = start_server(port, state / "server.log", env, host)
        wait_healthy(url, proc=server)
        pids["server"] = server.pid
    if auth is not None:
        echo(f"The API requires the auth string in {project_dir / AUTH_FILE} (owner-only; tuneline commands in this "
             "project read it). Other machines: set PREFECT_API_AUTH_STRING to it. Put TLS in front (README, "
             "Security).")
    serving = start_serving(project_dir, state / "serve.log" if detach else None, env, crons) if deployments else None
    if serving is not None:
        pids["serve"] = serving.pid
    echo(f"UI: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}   API: {url}")
    if serving is not None:
        echo(f"Run a deployment:  PREFECT_API_URL={url} prefect deployment run 'training/default'")
        echo("Also: 'monitoring/scheduled' (cron, drop folder data/incoming), 'retraining/nightly' (cron + drift "
             "events), 'sweep/default' (sweep.grid as DVC experiments)")
    if detach:
        state.mkdir(parents=True, exist_ok=True)
        (state / "pids.json").write_text(json.dumps(pids), encoding="utf-8")
        echo(f"Running in the background (PIDs {pids}); stop with: tuneline stop")
        return
    echo("Serving; stop with Ctrl-C (stops the server too if this command started it).")
    try:
        (serving or server).wait() if (serving or server) else None
    except KeyboardInterrupt:
        pass
    finally:
        if serving is not None:
            terminate(serving)
        if server is not None:
            terminate(server)


# What each process `tuneline serve --detach` recorded runs, as seen in its command line.
EXPECTED_COMMAND = {"server": ("prefect", "server", "start"), "serve": ("flows.deployments",)}


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def ours(name: str, pid: int) -> bool:
    """Whether `pid` is still the process `serve --detach` started: a real PID above 1, leading its own process
    group, running the command recorded for it (a PID from an old pids.json may belong to anything by now)."""
    if pid <= 1:
        return False
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    words = " ".join(command_line(pid))
    return all(word in words for word in EXPECTED_COMMAND.get(name, ("\0",)))


def stop(project_dir: Path) -> str:
    pid_file = project_dir / STATE_DIR / "pids.json"
    if not pid_file.exists():
        return "nothing to stop (no .tuneline/pids.json)"
    try:
        pids = {name: int(pid) for name, pid in json.loads(pid_file.read_text(encoding="utf-8")).items()}
    except (ValueError, TypeError, AttributeError):
        pid_file.unlink()
        return f"{pid_file} was not a PID record; removed it and stopped nothing"
    stopped, left = {}, {}
    for name in ("serve", "server"):
        if name in pids:
            if ours(name, pids[name]):
                terminate(pids[name])
                stopped[name] = pids[name]
            else:
                left[name] = pids[name]
    pid_file.unlink()
    said = f"stopped {stopped}" if stopped else "stopped nothing"
    return said + (f"; not ours any more, left alone: {left}" if left else "")


class ServerStart:
    """The server a command's flows report to: nothing to wait for, or a temporary server booting; `ready()` before
    the first flow."""

    def __init__(self, url: Optional[str] = None, proc: Optional[subprocess.Popen] = None):
        self.url, self.proc = url, proc

    def ready(self) -> None:
        if self.proc is not None:
            wait_healthy(self.url, timeout=120, proc=self.proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_temporary_server(port: int) -> subprocess.Popen:
    """Prefect's temporary API server (as Prefect starts one: uvicorn, no UI, ephemeral), in its own session: a
    terminal's Ctrl-C reaches the command, which stops the run cleanly while this server still answers, then stops
    it (at exit)."""
    import importlib.util

    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # not imported: settings not read yet
    env = dict(os.environ, PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
           "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
           "error", "--lifespan", "on"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    atexit.register(terminate, proc, 10.0)
    return proc


def use_running_server(port: int = DEFAULT_PORT) -> ServerStart:
    """Send flow runs to a local `tuneline serve` server when one answers, so they show in its UI; without one,
    start a temporary server for this command. It boots (in its own process and session) while the command does its
    imports; call `.ready()` on the result before running a flow. Sets PREFECT_API_URL (and the auth string of a
    `tuneline serve` started with one) before prefect is imported, which reads its settings once."""
    # A local tool sends no telemetry (and offline, the temporary server's heartbeat only logs lock errors).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    use_stored_auth(Path("."))
    if "PREFECT_API_URL" in os.environ:
        return ServerStart()
    if is_healthy(api_url(port), timeout=0.5):
        os.environ["PREFECT_API_URL"] = api_url(port)
        return ServerStart()
    temporary = free_port()
    os.environ["PREFECT_API_URL"] = api_url(temporary)
    return ServerStart(api_url(temporary), start_temporary_server(temporary))

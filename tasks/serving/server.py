"""`tuneline serve-model`: the production model behind LitServe, with the endpoints a team needs around it.

    POST /predict    {"inputs": [...]} -> {"predictions": [...], "model_version": N, "request_id": "..."}
    POST /feedback   {"request_id": "...", "label": ...} (or "labels": [...]): true labels for logged traffic
    GET  /health     the server is up          GET /ready    a model is loaded (and why a newer one is not)
    GET  /metrics    Prometheus text           GET /docs     OpenAPI

It binds 127.0.0.1 unless told otherwise; any other address needs TUNELINE_SERVE_TOKEN (bearer), or it does not
start. With `follow_remote`, a thread pulls the registry from the default DVC remote every so many seconds
(tasks/changes.py:pull), so replicas on other machines swap when a promotion anywhere is pushed.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable, Optional

from tasks.config import ConfigError, Params
from tasks.paths import ProjectPaths

TOKEN_ENV = "TUNELINE_SERVE_TOKEN"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
log = logging.getLogger("tuneline.serving")


def require_token(host: str) -> Optional[str]:
    """The bearer token: required beyond loopback (the server refuses to start without one, saying why)."""
    token = os.environ.get(TOKEN_ENV) or None
    if host not in LOOPBACK and not token:
        raise ConfigError(f"serving on {host} (beyond this machine) needs a bearer token: set {TOKEN_ENV} to a long "
                          "random string (clients send `Authorization: Bearer <token>`), or serve on 127.0.0.1; "
                          "put TLS in front (README, Security)")
    return token


MAX_AUTO_WORKERS = 4  # each inference worker holds its own copy of the model


def inference_workers(setting: int | str) -> tuple[int, str]:
    """serve.workers as a count, and why. On a CPU, one single-threaded worker per physical core served 3.42x the
    naive endpoint against 2.80x for one worker with a thread per core (MiniLM-L6, 2 cores, benchmarks/): small
    batches keep one thread busier than two, and while one worker gathers its batch the other computes."""
    if setting != "auto":
        return int(setting), "serve.workers"
    from tasks.engine.device import physical_cores, pick_device

    if pick_device().type != "cpu":
        return 1, "auto: one per accelerator"
    cores = physical_cores()
    return min(cores, MAX_AUTO_WORKERS), f"auto: one per physical core, at most {MAX_AUTO_WORKERS}"


def state_dir(paths: ProjectPaths, port: int) -> Path:
    return paths.root / ".tuneline/serve" / str(port)


def build(paths: ProjectPaths, params: Params, host: str, port: int, workers: int):
    """The LitServer for this project's production model, with `workers` inference workers (nothing started yet)."""
    import litserve as ls

    from tasks.files.weights import verify_weights
    from tasks.kinds import kind_of_model
    from tasks.kinds.base import InputLimits
    from tasks.registry.store import Registry
    from tasks.serving.api import TunelineAPI
    from tasks.serving.endpoints import add_endpoints
    from tasks.serving.guard import Guard, Limits
    from tasks.serving.traffic import TrafficLog

    cfg = params.serve
    token = require_token(host)
    registry = Registry.of_project(paths.root)
    if registry.production_version() is None:
        raise ConfigError(f"{paths.production}: no production model to serve yet (tuneline run trains and promotes "
                          "one; tuneline pull brings one from the shared remote)")
    verify_weights(paths.production.resolve())  # refuse to start on weights that differ from their record
    state = state_dir(paths, port)
    shutil.rmtree(state, ignore_errors=True)
    (state / "metrics").mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state / "metrics")  # before any process creates a metric
    limits = InputLimits(cfg.max_text_chars, cfg.max_image_pixels)
    api = TunelineAPI(str(paths.production), str(state / "workers"), limits, cfg.max_batch_size,
                      cfg.batch_timeout_ms / 1000, workers, cfg.log_share, cfg.reload_check_s,
                      params.inference.precision)
    traffic = TrafficLog(str(state / "traffic"), str(paths.incoming), str(paths.production),
                         params.data.model_dump(), cfg.rotate_rows, cfg.rotate_minutes * 60) if cfg.log_share else None
    kinds: dict[str, object] = {}

    def current_kind():
        target = str(paths.production.resolve())
        if target not in kinds:
            kinds.clear()
            kinds[target] = kind_of_model(target)
        return kinds[target]

    server = ls.LitServer(api, accelerator="auto", workers_per_device=workers, timeout=60, fast_queue=True,
                          healthcheck_path="/litserve/health", info_path="/litserve/info",
                          loggers=[traffic] if traffic else None,
                          middlewares=[(Guard, {"kind_of": current_kind, "token": token,
                                                "limits": Limits(cfg.max_body_bytes, cfg.max_rows_per_request,
                                                                 limits)})])

    add_endpoints(server.app, state / "workers", workers, registry.production_version,
                  lambda: server.logger_queue)
    return server


def tell_traffic_log(server, message: str) -> bool:
    """Queue a message for the traffic logger (after the rows already queued); False when there is none to tell."""
    queue = getattr(server, "logger_queue", None)
    if queue is None:
        return True  # not started yet
    try:
        queue.put((message, None))
        return True
    except Exception:  # the server is shutting down
        return False


def tick(server, every_s: float, stop: threading.Event) -> None:
    """Wake the traffic logger now and then, so a quiet server still rotates on time."""
    while not stop.wait(every_s):
        if not tell_traffic_log(server, "tick"):
            return


def follow(paths: ProjectPaths, every_s: float, stop: threading.Event) -> None:
    """Every `every_s` seconds, read the remote's registry pointer; when a push by any clone moved it, pull the
    registry and move this machine's production link, and every worker swaps. A round that finds the project busy
    waits for the next."""
    from tasks import changes
    from tasks.orchestration import storage
    from tasks.orchestration.locking import ProjectBusy

    location = None
    while not stop.wait(every_s):
        try:
            location = location or storage.remote_location(paths.root)  # opened once: DVC's config, credentials
            for line in changes.follow_remote(paths.root, location):
                log.info("follow: %s", line)
        except ProjectBusy:
            continue
        except Exception as exc:
            location = None  # opened again next round (a changed remote, expired credentials)
            log.error("follow: pulling the registry failed: %s", exc)


def serve(project_dir: Path, params: Params, host: Optional[str] = None, port: Optional[int] = None,
          follow_remote: Optional[float] = None, announce: Callable[[str], None] = print) -> None:
    """Run the model server until Ctrl-C or SIGTERM (both stop it gracefully); `announce` gets the start line."""
    paths = ProjectPaths(Path(project_dir).resolve())
    host, port = host or params.serve.host, port or params.serve.port
    workers, why = inference_workers(params.serve.workers)
    announce(f"model server for {paths.production} on http://{host}:{port}, {workers} inference worker"
             f"{'s' if workers > 1 else ''} ({why}) (docs: /docs; Ctrl-C stops it)")
    server = build(paths, params, host, port, workers)
    stop = threading.Event()
    threading.Thread(target=tick, args=(server, 5.0, stop), daemon=True, name="tuneline-traffic-tick").start()
    if follow_remote:
        threading.Thread(target=follow, args=(paths, follow_remote, stop), daemon=True,
                         name="tuneline-follow-remote").start()

    main_pid = os.getpid()

    def graceful(signum, frame):
        if os.getpid() != main_pid:  # a LitServe process forked with this handler: the main process stops it
            if signum == signal.SIGINT:  # (with SIGTERM, once its shutdown begins): a terminal's Ctrl-C is ignored
                return
            os._exit(0)  # quietly: a traceback per process would bury the one line that says the server stopped
        # The traffic logger rotates the rows it holds and exits, before LitServe ends its queue. Told from a thread
        # of its own: a queue call here could interrupt one of the main thread's on the same connection.
        teller = threading.Thread(target=tell_traffic_log, args=(server, "stop"), daemon=True)
        teller.start()
        teller.join(timeout=5)
        raise KeyboardInterrupt

    # Ctrl-C (sent to every process of the terminal's group) and SIGTERM (`docker stop`, systemd): LitServe shuts down.
    previous = {signum: signal.signal(signum, graceful) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(host=host, port=port, num_api_servers=params.serve.api_servers, generate_client_file=False,
                   log_level="warning")
    finally:
        stop.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""The production model inside one inference worker, and its swap for a new version.

A watcher thread reads the production link (`models/production`, switched atomically by every promotion, rollback
and pull) every serve.reload_check_s seconds. When it points at another version, the worker loads that version
beside the one it serves (the weights' sha256 checked against the version's record, as Predictor does) and reports
it staged. Once every live worker has staged it, all of them switch at one agreed moment (the last staging time plus
two checks, read from the same status files). A batch takes the model once, at its start, switching first if that
moment has passed: so requests in flight finish on the version they started on, no request fails, and a client
whose requests land on different workers sees the version change once. A version that does not load, or fails its
check, is not switched to: the worker keeps answering with the one it has, logs why, and reports it (/ready).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger("tuneline.serving")


STAGE_TIMEOUT_S = 60.0  # a worker that never stages the new version does not hold the others back longer


@dataclass(frozen=True)
class Staged:
    loaded: "Loaded"
    at: float                           # when this worker finished loading it
    switch_at: Optional[float] = None   # the agreed moment, once every worker has staged it


@dataclass(frozen=True)
class Loaded:
    """One loaded version: what a batch runs on from start to end."""
    version: Optional[int]  # the registry version (None for a model directory outside a registry)
    target: str             # the directory the production link pointed at
    predictor: object       # tasks.inference.Predictor


def version_of(model_dir: Path) -> Optional[int]:
    record = model_dir / "record.json"
    if record.exists():
        return int(json.loads(record.read_text(encoding="utf-8"))["version"])
    return None


def link_target(production: Path) -> str:
    """Where the production link points now (the directory itself when it is not a link)."""
    return str(production.resolve())


class ProductionModel:
    def __init__(self, production: Path, status_dir: Path, batch_size: int, check_s: float, worker: str,
                 precision: str = "auto"):
        self.production, self.status_dir, self.batch_size = production, status_dir, batch_size
        self.precision = precision
        self.check_s, self.worker = check_s, worker
        self.current: Optional[Loaded] = None
        self.staged: Optional[Staged] = None
        self.error: Optional[str] = None   # why the version production points at is not the one served
        self.refused: Optional[str] = None  # a target that failed: not tried again until the link moves on
        self.stop = threading.Event()

    def load(self, target: str) -> Loaded:
        from tasks.inference import Predictor

        directory = Path(target)
        return Loaded(version_of(directory), target, Predictor(directory, batch_size=self.batch_size,
                                                               precision=self.precision))

    def start(self) -> None:
        """Load what production points at now (a worker without a model does not start), then watch the link."""
        self.current = self.load(link_target(self.production))
        self.report()
        threading.Thread(target=self.watch, name="tuneline-model-watch", daemon=True).start()

    def watch(self) -> None:
        while not self.stop.wait(self.check_s):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next check tries again
                log.exception("checking %s failed", self.production)

    def for_batch(self) -> Loaded:
        """The model a batch starting now runs on: the staged version once the agreed moment has passed."""
        staged = self.staged
        if staged is not None and staged.switch_at is not None and time.time() >= staged.switch_at:
            self.switch(staged.loaded)
        return self.current

    def switch(self, loaded: Loaded) -> None:
        from tasks.serving import metrics

        before, self.current, self.staged = self.current, loaded, None
        metrics.SWAPS.inc()
        log.warning("worker %s: switched v%s -> v%s", self.worker, before.version, loaded.version)
        self.report()

    def check(self) -> None:
        from tasks.serving import metrics

        target = link_target(self.production)
        if self.staged is not None and self.staged.loaded.target != target:
            self.staged = None  # production moved on again before the switch
        if target in (self.current.target, self.refused):
            self.staged = None
            return
        if self.staged is None:
            try:
                self.staged = Staged(self.load(target), time.time())
            except Exception as exc:
                self.refused = target
                self.error = (f"production points at {target}, which was not loaded ({type(exc).__name__}: {exc}); "
                              f"still answering with v{self.current.version}")
                log.error("worker %s: %s", self.worker, self.error)
                metrics.SWAP_FAILURES.inc()
                self.report()
                return
            self.error = self.refused = None
            self.report()
        if self.staged.switch_at is None:
            self.staged = Staged(self.staged.loaded, self.staged.at, self.agreed_moment(target))

    def agreed_moment(self, target: str) -> Optional[float]:
        """When every live worker has staged `target`: the last staging time plus two checks (the same for all of
        them: they read the same files); None while one is still loading (or a timeout's worth, then now)."""
        workers = worker_statuses(self.status_dir)
        staged = [w.get("staged_at") for w in workers if w.get("staged") == target]
        if len(staged) >= len(workers) and all(staged):
            return max(staged) + 2 * self.check_s
        if time.time() - self.staged.at > STAGE_TIMEOUT_S:
            return time.time()
        return None

    def report(self) -> None:
        """This worker's state for /ready, /metrics and the other workers."""
        from tasks.serving import metrics

        metrics.MODEL_VERSION.labels(self.worker).set(self.current.version or 0)
        self.status_dir.mkdir(parents=True, exist_ok=True)
        staged = self.staged
        status = {"pid": os.getpid(), "worker": self.worker, "version": self.current.version,
                  "model_dir": self.current.target, "error": self.error, "time": time.time(),
                  "staged": staged.loaded.target if staged else None, "staged_at": staged.at if staged else None}
        tmp = self.status_dir / f".{os.getpid()}.json.tmp"
        tmp.write_text(json.dumps(status), encoding="utf-8")
        os.replace(tmp, self.status_dir / f"{os.getpid()}.json")


def worker_statuses(status_dir: Path) -> list[dict]:
    """The live workers' last reports (a dead worker's file is ignored)."""
    out = []
    for path in sorted(status_dir.glob("*.json")):
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
            os.kill(int(status["pid"]), 0)
        except (OSError, ValueError, KeyError):
            continue
        out.append(status)
    return out

"""Every change of a project's versioned state, one function each: ingest a batch, promote the evaluated candidate,
roll production back, pull from the shared remote, finish or undo an interrupted registry operation.

Each takes the lock of the project that owns the state (the project directory, never the caller's working
directory), makes the change, then versions what it changed with `dvc add`, so `dvc status` is clean afterwards.
The CLI commands and the Prefect flows call these functions and nothing else changes that state.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional, TypeVar

from tasks.config import Params, load_params
from tasks.files.weights import verify_weights
from tasks.kinds.base import TokenBudget
from tasks.monitoring.batches import BatchInfo, BatchStore
from tasks.orchestration.locking import lock_timeout, project_lock
from tasks.orchestration.pipeline import dvc_add, dvc_add_alongside
from tasks.orchestration.server_slot import confirm_slots
from tasks.paths import ProjectPaths
from tasks.registry import promotion
from tasks.registry.store import Registry

T = TypeVar("T")


def _is_dvc_repo(paths: ProjectPaths) -> bool:
    return (paths.root / ".dvc").is_dir()


def _versioned(paths: ProjectPaths, path: Path) -> None:
    """`dvc add` what changed, in a project that is a DVC repository (a bare registry folder has nothing to add to)."""
    if _is_dvc_repo(paths):
        dvc_add(path.relative_to(paths.root), paths.root)


def training_labels(registry: Registry, params: Params) -> Optional[list[str]]:
    """The production model's label set (a batch may only use these labels); before any model, validate.labels."""
    if registry.production_version() is None:
        return params.validate_.labels
    return registry.production_labels()


def ingest(project_dir: str | Path, file: str | Path, params: Optional[Params] = None,
           meanwhile: Optional[Callable[[BatchInfo], T]] = None,
           stored: Optional[BatchInfo] = None) -> tuple[BatchInfo, Optional[T]]:
    """Validate a batch file against the training schema and production's labels and store it (BatchRejected, and
    nothing stored, when it fails). `data/batches` is then versioned by `dvc add` in its own process while
    `meanwhile(batch)` runs here (the drift check uses the second core that way); returns the batch and its result.
    `stored`: the file was stored by a run that stopped before its drift check; it is versioned and checked again."""
    paths = ProjectPaths(Path(project_dir).resolve())
    params = params or load_params(paths.params)
    with project_lock(paths.root, params.monitor.lock_timeout_s):
        store = BatchStore(paths.batches)
        batch = stored or store.ingest(
            file, params.data, params.validate_, training_labels(Registry.of_project(paths.root), params),
            kind=params.task.kind, budget=TokenBudget(params.train.model, params.preprocess.max_length))
        versioning = (dvc_add_alongside(paths.batches.relative_to(paths.root), paths.root) if _is_dvc_repo(paths)
                      else nullcontext())
        with versioning:
            result = meanwhile(batch) if meanwhile else None
    return batch, result


def promote(project_dir: str | Path) -> promotion.PromotionResult:
    """Gate the evaluated candidate against production on the same test rows; promote or reject, recorded."""
    paths = ProjectPaths(Path(project_dir).resolve())
    params = load_params(paths.params)
    with project_lock(paths.root, params.monitor.lock_timeout_s):
        confirm_slots()  # a flow run that lost its server-wide slot stops here, before production changes
        result = promotion.run(params, paths.processed, paths.candidate, paths.metrics,
                               Registry.of_project(paths.root), paths.root, paths.reference)
        _versioned(paths, paths.registry)
    return result


def rollback(project_dir: str | Path, version: int) -> tuple[Optional[int], int]:
    """Point production back at an earlier promoted version (recorded as its own event); returns (before, after)."""
    paths = ProjectPaths(Path(project_dir).resolve())
    registry = Registry.of_project(paths.root)
    with project_lock(paths.root, lock_timeout(paths.root)):
        before = registry.production_version()
        registry.rollback(version)
        _versioned(paths, paths.registry)
    return before, version


def repair(project_dir: str | Path, wait_s: Optional[float] = None) -> list[str]:
    """Finish or undo a registry operation that was killed part way (see registry/store.py); what was done."""
    paths = ProjectPaths(Path(project_dir).resolve())
    with project_lock(paths.root, lock_timeout(paths.root) if wait_s is None else wait_s):
        done = Registry.of_project(paths.root).repair()
        if done and paths.registry.exists():
            _versioned(paths, paths.registry)
    return done


def pull(project_dir: str | Path) -> list[str]:
    """On a fresh clone: `dvc pull` data, models and the registry, then restore the production link."""
    from tasks.orchestration import storage

    paths = ProjectPaths(Path(project_dir).resolve())
    with project_lock(paths.root, lock_timeout(paths.root)):
        lines = [storage.pull(paths.root)]
        adopted = storage.adopt_registry_head(paths.root)
        lines += [adopted] if adopted else []
        lines += repair(paths.root)
        lines += follow_production(paths)
    return lines


def follow_remote(project_dir: str | Path, location=None) -> list[str]:
    """One round of a replica following the shared remote: nothing unless the remote's registry pointer moved (one
    small read); then only the registry is pulled (not data or candidate) and production follows its events.
    `location`: storage.remote_location(), kept by a caller that polls."""
    from tasks.orchestration import storage

    paths = ProjectPaths(Path(project_dir).resolve())
    location = location or storage.remote_location(paths.root)
    if storage.new_registry_head(paths.root, location) is None:
        return []
    with project_lock(paths.root, lock_timeout(paths.root)):
        adopted = storage.adopt_registry_head(paths.root, location)
        return ([adopted] if adopted else []) + repair(paths.root) + follow_production(paths)


def follow_production(paths: ProjectPaths) -> list[str]:
    """After a pull: production is the version the registry's events say (a promotion or rollback elsewhere),
    after its weights passed their check; this machine's link moves there."""
    registry = Registry.of_project(paths.root)
    wanted, current = registry.production_from_events(), registry.production_version()
    if wanted is None:
        return []
    verify_weights(registry.version_dir(wanted))  # raises naming the file when the pull brought others
    said = []
    if wanted != current:
        registry.switch_production(wanted)
        said.append(f"production: v{current} -> v{wanted} (the registry's last promotion or rollback)")
    return said + [f"production v{wanted}: its weights match the sha256 recorded at its promotion"]

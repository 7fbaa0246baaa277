"""Named objects on the Prefect server that tuneline creates when missing: a work pool, a global concurrency limit.
Another machine creating the same object meanwhile is fine."""
from __future__ import annotations

from typing import Callable


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


def ensure_pool(pool: str) -> None:
    """A `process` work pool of that name on the server (workers run each flow run as a local process)."""
    from prefect.client.schemas.actions import WorkPoolCreate

    ensure_on_server(lambda c: c.read_work_pool(pool),
                     lambda c: c.create_work_pool(WorkPoolCreate(name=pool, type="process")))


def ensure_limit(name: str, limit: int = 1) -> None:
    """A global concurrency limit (Prefect ignores a slot of a limit that does not exist)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    ensure_on_server(lambda c: c.read_global_concurrency_limit_by_name(name),
                     lambda c: c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit)))

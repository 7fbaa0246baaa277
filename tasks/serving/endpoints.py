"""The model server's own endpoints beside LitServe's /predict: /health, /ready, /metrics, /feedback.

No `from __future__ import annotations` here: FastAPI reads these functions' annotations at run time to build the
OpenAPI document (/docs) and to parse /feedback's body.
"""
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


class Feedback(BaseModel):
    """The true labels of a logged request's inputs."""
    request_id: str = Field(description="the request_id its /predict answer carried")
    label: Optional[Any] = Field(None, description="the label of a one-input request")
    labels: Optional[list[Any]] = Field(None, description="one label per input, in order (null for unknown)")


class Accepted(BaseModel):
    accepted: bool
    request_id: str


def add_endpoints(app: FastAPI, workers_dir: Path, expected_workers: int, production_version: Callable[[], Any],
                  traffic_queue: Callable[[], Any]) -> None:
    from tasks.serving.models import worker_statuses

    @app.get("/health", tags=["tuneline"])
    async def health() -> dict:
        """The server is up (answered without the token, for load balancers)."""
        return {"status": "alive"}

    @app.get("/ready", tags=["tuneline"], response_model=None)
    async def ready() -> JSONResponse:
        """200 when every inference worker has a model loaded: each worker's version, and why a newer production
        version is not served (a failed load or sha256 check)."""
        workers = worker_statuses(workers_dir)
        body = {"ready": len(workers) >= expected_workers, "production": production_version(),
                "workers": [{k: w.get(k) for k in ("pid", "version", "error")} for w in workers],
                "errors": [w["error"] for w in workers if w.get("error")]}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["tuneline"], response_model=None)
    async def metrics() -> Response:
        """Prometheus text format: requests, errors, latency, batch sizes, each worker's model version."""
        from tasks.serving.metrics import exposition

        data, content_type = exposition()
        return Response(data, media_type=content_type)

    @app.post("/feedback", status_code=202, tags=["tuneline"], response_model=None)
    async def feedback(body: Feedback) -> Any:
        """True labels for a logged request: they go into the drop folder with its inputs at the next traffic
        rotation, as a labelled batch."""
        labels = body.labels if body.labels is not None else ([body.label] if body.label is not None else None)
        if labels is None:
            return JSONResponse({"error": 'label: missing; give "label" (one input) or "labels" (one per input)'},
                                status_code=422)
        queue = traffic_queue()
        if queue is None:
            return JSONResponse({"error": "traffic logging is off (serve.log_share: 0): nothing to label"},
                                status_code=409)
        queue.put(("feedback", {"request_id": body.request_id, "labels": labels}))
        return Accepted(accepted=True, request_id=body.request_id)

"""Prometheus metrics of the model server, shared by all its processes (HTTP servers, inference workers, the
traffic logger) through prometheus_client's multiprocess mode: each process writes its own files under
PROMETHEUS_MULTIPROC_DIR, which server.py sets before any of them starts; /metrics adds them up."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("tuneline_requests", "HTTP requests answered", ["path", "status"])
ERRORS = Counter("tuneline_request_errors", "HTTP requests answered with an error", ["path", "kind"])
LATENCY = Histogram("tuneline_request_seconds", "time from request to answer", ["path"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BATCH_REQUESTS = Histogram("tuneline_batch_requests", "requests grouped into one model call",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128))
BATCH_ROWS = Histogram("tuneline_batch_rows", "input rows in one model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
MODEL_VERSION = Gauge("tuneline_model_version", "the registry version each inference worker answers with",
                      ["worker"], multiprocess_mode="liveall")
SWAPS = Counter("tuneline_model_swaps", "production versions a worker switched to")
SWAP_FAILURES = Counter("tuneline_model_swap_failures", "versions a worker refused to switch to (load or sha256)")
TRAFFIC_ROWS = Counter("tuneline_traffic_rows_logged", "answered rows written to the traffic log")


def exposition() -> tuple[bytes, str]:
    """Every process's metrics, added up, in Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST

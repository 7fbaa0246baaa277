"""The model server (`tuneline serve-model`): LitServe in front of the production model.

    guard.py    what every HTTP request passes first: the bearer token, body and input limits, request ids, metrics
    api.py      the LitAPI each inference worker runs: batches of requests through the production model
    models.py   the production model inside a worker, swapped for a new version without a failed request
    traffic.py  answered rows logged to rotating Parquet files that become drop-folder batches; /feedback labels
    metrics.py  Prometheus metrics shared by every process of the server
    server.py   building the LitServer, its extra endpoints, and following a shared DVC remote
"""

"""What every HTTP request to the model server passes first, in the HTTP server process, before anything reaches an
inference worker:

- the bearer token (TUNELINE_SERVE_TOKEN) when the server listens beyond this machine: 401 without it (/health is
  open, for load balancers);
- the body limit (serve.max_body_bytes: 413), JSON that parses (400 naming where it broke), `{"inputs": [...]}` of
  at most serve.max_rows_per_request inputs (413), each input checked by the task kind (a text within
  serve.max_text_chars, an image whose base64 decodes and whose header is within serve.max_image_pixels);
- images also as a multipart upload (files in `inputs`), turned into the same JSON;
- a request id, given to the worker and returned in the answer and the X-Request-Id header (/feedback names it);
- request counts, errors and latency for /metrics.

So a bad request is refused here with a JSON error naming the field and the limit, never a 500, and a poisoned
request never reaches (or stops) a worker.
"""
from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tasks.kinds.base import BadInput, InputLimits, Kind

OPEN_PATHS = ("/health",)  # answered without the token
PREDICT = "/predict"
KNOWN_PATHS = (PREDICT, "/feedback", "/health", "/ready", "/metrics")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_rows: int
    inputs: InputLimits


class TooLarge(Exception):
    pass


async def read_body(receive: Callable, limit: int) -> bytes:
    """The whole request body, refused past `limit` bytes without reading the rest."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        body += message.get("body", b"")
        if len(body) > limit:
            raise TooLarge()
        if not message.get("more_body"):
            return body


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadInput(400, f"body: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (UnicodeDecodeError, RecursionError):
        raise BadInput(400, "body: not valid JSON (undecodable or nested too deeply)") from None


async def parse_multipart(scope: dict, body: bytes) -> dict:
    """A multipart upload: every file part named `inputs` (or any file part) becomes a base64 input."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, replay).form(max_files=10_000, max_fields=10_000)
    except Exception as exc:  # python-multipart's errors name the problem, never a user's data
        raise BadInput(400, f"body: not a readable multipart form ({type(exc).__name__})") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise BadInput(422, "inputs: a multipart request needs at least one file part")
    return {"inputs": [base64.b64encode(await f.read()).decode("ascii") for f in files]}


def check_predict(payload: Any, kind: Kind, limits: Limits) -> dict:
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadInput(422, 'body: a JSON object with an "inputs" list is expected, e.g. {"inputs": ["text"]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise BadInput(422, "inputs: a non-empty list is expected")
    if len(inputs) > limits.max_rows:
        raise BadInput(413, f"inputs: {len(inputs)} inputs exceeds serve.max_rows_per_request={limits.max_rows}")
    for i, value in enumerate(inputs):
        kind.request_input(value, f"inputs[{i}]", limits.inputs)
    return {"inputs": inputs}


class Guard:
    """A pure ASGI middleware (LitServer adds it to its FastAPI app; every HTTP server process has one)."""

    def __init__(self, app, kind_of: Callable[[], Kind], limits: Limits, token: Optional[str]):
        self.app, self.kind_of, self.limits, self.token = app, kind_of, limits, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from tasks.serving import metrics

        path, start = scope["path"], time.perf_counter()
        status_seen = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status_seen["code"] = message["status"]
            await send(message)

        try:
            await self.handle(scope, receive, send_counted)
        finally:
            status = status_seen["code"]
            label = path if path in KNOWN_PATHS else "other"
            metrics.REQUESTS.labels(label, str(status)).inc()
            metrics.LATENCY.labels(label).observe(time.perf_counter() - start)
            if status >= 400:
                metrics.ERRORS.labels(label, "client" if status < 500 else "server").inc()

    async def handle(self, scope, receive, send):
        path = scope["path"]
        if self.token and path not in OPEN_PATHS and not self.authorized(scope):
            return await reply(send, 401, {"error": "unauthorized: send Authorization: Bearer <TUNELINE_SERVE_TOKEN>"},
                               extra=[(b"www-authenticate", b"Bearer")])
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            body = await read_body(receive, self.limits.max_body_bytes)
        except TooLarge:
            return await reply(send, 413, {"error": f"body: more than serve.max_body_bytes="
                                                    f"{self.limits.max_body_bytes:,} bytes"})
        except ConnectionError:
            return None
        if path != PREDICT:  # /feedback: JSON whatever the client called it (curl -d says form-urlencoded)
            return await self.app(as_json(scope, len(body)), replayed(body, receive), send)
        request_id = uuid.uuid4().hex
        try:
            content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            payload = (await parse_multipart(scope, body) if content_type.startswith("multipart/form-data")
                       else parse_json(body))
            checked = check_predict(payload, self.kind_of(), self.limits)
        except BadInput as bad:
            return await reply(send, bad.status, {"error": str(bad)})
        checked["request_id"] = request_id
        forwarded = json.dumps(checked).encode()
        scope = as_json(scope, len(forwarded))

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), (b"x-request-id", request_id.encode())])
            await send(message)

        await self.app(scope, replayed(forwarded, receive), send_with_id)

    def authorized(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())


def as_json(scope: dict, length: int) -> dict:
    """The request's scope with a JSON content type and the length of the body the app will be handed."""
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"content-type")]
    return dict(scope, headers=[*headers, (b"content-type", b"application/json"),
                                (b"content-length", str(length).encode())])


def replayed(body: bytes, receive: Callable) -> Callable:
    """An ASGI `receive` that hands the app a body read before, then listens to the client again (a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def reply(send, status: int, body: dict, extra: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": data})

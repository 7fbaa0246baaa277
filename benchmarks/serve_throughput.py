"""Serving throughput: `tuneline serve-model` (LitServe, dynamic batching) against a naive FastAPI endpoint that calls
`transformers.pipeline` once per request, beside it in the same run, on the same production model; then the cost of
traffic logging at its default share, and a promotion under load.

Load: an async client (aiohttp; --client httpx for the heavier one) on loopback with `--clients` concurrent clients
(default 32), one text per request, each client sending its next request when the last is answered. The three
servers (naive, tuneline with traffic logging at its default share, tuneline with logging off) run side by side
after a 5 s warm-up each; `--rounds` rounds (default 3) each load every server in turn for `--seconds` (default 10).
Printed per server, pooled over the rounds: requests/s, p50/p95/p99 latency, failed requests, the load generator's
own CPU per request, and for tuneline the mean batch (requests per model call, from its /metrics); then each
round's ratio. Ratios: tuneline vs naive requests/s (goal >= 3x, with a lower p99), and logging off vs on (goal:
logging costs at most 5%). Then, across a promotion under the same load: failed requests (goal 0) and the versions
each client saw (goal: each sees one switch, v1 -> v2).

usage: python benchmarks/serve_throughput.py [--clients 32] [--seconds 10] [--rounds 3] [--workers N]
       [--production models/production]
The production model: --production when it exists (e.g. after `make run`), else the packaged MiniLM with a seeded
head (throughput does not depend on how well the model was trained).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
REPO = Path(__file__).resolve().parents[1]

NAIVE_SERVER = """
import sys
from fastapi import FastAPI
from pydantic import BaseModel
import uvicorn
from transformers import pipeline

classifier = pipeline("text-classification", model=sys.argv[1], top_k=None, truncation=True)
app = FastAPI()

class Body(BaseModel):
    inputs: list[str]

@app.post("/predict")
def predict(body: Body):
    return {"predictions": classifier(body.inputs)}

@app.get("/ready")
def ready():
    return {"ready": True}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def texts(n: int = 2000) -> list[str]:
    from tasks.config import DataConfig
    from tasks.kinds.text import TextKind

    df = TextKind().read_source(DataConfig(embedded_topic_pattern=None))
    return df["text"].astype(str).sample(n=n, random_state=0).tolist()


def project(root: Path, production: Path) -> Path:
    """A project whose registry holds v1 and v2 (v1 in production): the given production model twice, or the
    packaged MiniLM with two seeded heads."""
    import torch

    from tasks.config import TrainConfig
    from tasks.kinds import mark_model_kind
    from tasks.registry.store import Registry
    from tasks.stages.train import build_model

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text("{}\n")
    registry = Registry.of_project(root)
    for version in (1, 2):
        if production.exists():
            source = production.resolve()
        else:
            torch.manual_seed(version)
            model, tokenizer = build_model(TrainConfig(), ["negative", "neutral", "positive"])
            source = root / f"candidate-{version}"
            model.save_pretrained(source)
            tokenizer.save_pretrained(source)
            mark_model_kind(source, "text-classification")
        registry.promote(source, {"version": version, "decision": {"promoted": True}}, "card")
    registry.rollback(1)
    return root


def start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(log.read_text()[-3000:])


def stop(proc: subprocess.Popen) -> None:
    from tasks.orchestration.prefect_server import terminate

    terminate(proc, timeout=20)


class Http:
    """The load generator's HTTP client. It shares this machine's cores with the server it measures, so its own CPU
    per request is printed; aiohttp (the default) costs a fraction of httpx's, which leaves the server more of them."""

    def __init__(self, library: str, clients: int):
        self.library, self.clients = library, clients

    async def __aenter__(self) -> "Http":
        if self.library == "aiohttp":
            import aiohttp

            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.clients),
                                                 timeout=aiohttp.ClientTimeout(total=120))
            self.errors: tuple = (aiohttp.ClientError, asyncio.TimeoutError)
        else:
            import httpx

            self.session = httpx.AsyncClient(timeout=120, limits=httpx.Limits(
                max_connections=self.clients, max_keepalive_connections=self.clients))
            self.errors = (httpx.HTTPError,)
        return self

    async def __aexit__(self, *exc) -> None:
        await (self.session.close() if self.library == "aiohttp" else self.session.aclose())

    async def post(self, url: str, payload: dict) -> tuple[int, bytes]:
        if self.library == "aiohttp":
            async with self.session.post(url, json=payload) as answered:
                return answered.status, await answered.read()
        answered = await self.session.post(url, json=payload)
        return answered.status_code, answered.content


CLIENT = {"library": "aiohttp"}  # --client


async def load(url: str, sentences: list[str], clients: int, seconds: float, during=None) -> dict:
    """`clients` concurrent clients for `seconds`: latencies, failures, the versions each one saw in order, and the
    load generator's own CPU per request."""
    latencies, failures, seen = [], [], {i: [] for i in range(clients)}
    deadline = time.perf_counter() + seconds

    async def client(i: int, http: Http) -> None:
        k = i
        while time.perf_counter() < deadline:
            text = sentences[k % len(sentences)]
            k += clients
            start = time.perf_counter()
            try:
                status, body = await http.post(f"{url}/predict", {"inputs": [text]})
            except http.errors as exc:
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append(body[:200].decode(errors="replace"))
                continue
            latencies.append(time.perf_counter() - start)
            version = json.loads(body).get("model_version")
            if not seen[i] or seen[i][-1] != version:
                seen[i].append(version)

    cpu = time.process_time()
    async with Http(CLIENT["library"], clients) as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(clients)]
        if during is not None:
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(during)
        await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    return {"seconds": seconds, "latencies": latencies, "failures": failures, "seen": seen, "cpu": cpu}


def summary(runs: list[dict]) -> dict:
    """Runs of one server pooled: requests/s over their seconds, latency percentiles over all their requests."""
    latencies = sorted(x for r in runs for x in r["latencies"])
    failures = [f for r in runs for f in r["failures"]]
    seconds = sum(r["seconds"] for r in runs)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"rps": len(latencies) / seconds, "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
            "ok": len(latencies), "failed": len(failures), "failures": failures[:3],
            "rounds": [len(r["latencies"]) / r["seconds"] for r in runs],
            "client_cpu_ms": 1000 * sum(r["cpu"] for r in runs) / max(1, len(latencies) + len(failures))}


def mean_batch(url: str) -> float:
    import httpx

    total = count = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("tuneline_batch_requests_sum"):
            total = float(line.split()[-1])
        elif line.startswith("tuneline_batch_requests_count"):
            count = float(line.split()[-1])
    return total / count if count else float("nan")


SERVE: dict = {}  # serve.* settings the command line asked for (--max-batch-size, --workers)


def tuneline_server(root: Path, log_share: float, workdir: Path, tag: str) -> tuple[str, subprocess.Popen, Path]:
    import yaml

    (root / "params.yaml").write_text(yaml.safe_dump({"serve": {**SERVE, "log_share": log_share}}))
    port = free_port()
    log = workdir / f"tuneline-{tag}.log"
    proc = start([sys.executable, "-m", "tasks.cli", "serve-model", "--project-dir", str(root), "--port", str(port)],
                 log, dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return url, proc, log


def row(name: str, r: dict, batch: str = "") -> str:
    return (f"| {name} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['failed']} | "
            f"{batch} | {r['client_cpu_ms']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10, help="seconds per server per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every server in turn")
    parser.add_argument("--production", type=Path, default=Path("models/production"))
    parser.add_argument("--max-batch-size", type=int, default=None, help="serve.max_batch_size (default: params')")
    parser.add_argument("--workers", type=int, default=None, help="serve.workers (default: params')")
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp",
                        help="the load generator's HTTP client (httpx: several times its CPU per request)")
    args = parser.parse_args()
    CLIENT["library"] = args.client
    SERVE.update({k: v for k, v in (("max_batch_size", args.max_batch_size), ("workers", args.workers)) if v})
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    root = project(workdir / "project", args.production)
    sentences = texts()
    print(f"model: {'production ' + str(args.production) if args.production.exists() else 'packaged MiniLM, seeded head'}"
          f"; {args.clients} clients, 1 text per request, {args.rounds} rounds of {args.seconds:g} s per server "
          f"after a 5 s warm-up, {args.client} client; serve settings {SERVE or 'params defaults'}; "
          f"{os.cpu_count()} CPUs", flush=True)
    servers: dict[str, tuple[str, subprocess.Popen]] = {}
    try:
        # All three servers run side by side; the rounds alternate between them, so a slower minute of this
        # (shared, virtual) machine weighs on each of them alike. An idle server takes next to no CPU.
        port = free_port()
        naive_log = workdir / "naive.log"
        naive = start([sys.executable, "-c", NAIVE_SERVER, str(root / "models/production"), str(port)], naive_log,
                      dict(os.environ))
        servers["naive"] = (f"http://127.0.0.1:{port}", naive)
        wait_ready(servers["naive"][0], naive, naive_log)
        for tag, share in (("logging-default", 1.0), ("logging-off", 0.0)):
            url, proc, _ = tuneline_server(root, share, workdir, tag)
            servers[tag] = (url, proc)
        for url, _ in servers.values():
            asyncio.run(load(url, sentences, args.clients, 5))  # warm-up
        runs: dict[str, list[dict]] = {tag: [] for tag in servers}
        for _ in range(args.rounds):
            for tag, (url, _) in servers.items():
                runs[tag].append(asyncio.run(load(url, sentences, args.clients, args.seconds)))
        results = {tag: summary(r) for tag, r in runs.items()}
        for tag in ("logging-default", "logging-off"):
            results[tag]["batch"] = mean_batch(servers[tag][0])
        for tag in ("naive", "logging-off"):
            stop(servers.pop(tag)[1])
        from tasks.registry.store import Registry

        url = servers["logging-default"][0]
        swapped = asyncio.run(load(url, sentences, args.clients, 2 * args.seconds,
                                   during=lambda: Registry.of_project(root).rollback(2)))
        swap = {**summary([swapped]), "seen": swapped["seen"]}
    finally:
        for _, proc in servers.values():
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    naive, on, off = results["naive"], results["logging-default"], results["logging-off"]
    print("\n| server | requests/s | p50 ms | p95 ms | p99 ms | failed | mean batch | load generator CPU ms/request |")
    print("|---|---|---|---|---|---|---|---|")
    print(row("naive FastAPI + transformers.pipeline per request", naive))
    print(row("tuneline serve-model (log_share 1.0, the default)", on, f"{on['batch']:.1f}"))
    print(row("tuneline serve-model (log_share 0)", off, f"{off['batch']:.1f}"))
    print(f"\ntuneline / naive requests/s: {on['rps'] / naive['rps']:.2f}x (goal >= 3x); p99 {on['p99']:.0f} ms vs "
          f"{naive['p99']:.0f} ms ({'lower' if on['p99'] < naive['p99'] else 'NOT lower'})")
    print("per round: tuneline / naive " + ", ".join(f"{a / b:.2f}x" for a, b in zip(on["rounds"], naive["rounds"]))
          + "; logging off / on " + ", ".join(f"{a / b:.2f}" for a, b in zip(off["rounds"], on["rounds"])))
    print(f"traffic logging at its default share costs {100 * (1 - on['rps'] / off['rps']):.1f}% of requests/s "
          "(goal <= 5%)")
    switches = {tuple(v) for v in swap["seen"].values()}
    print(f"promotion under load (v1 -> v2 while {args.clients} clients run): {swap['ok']} answered, "
          f"{swap['failed']} failed (goal 0); versions seen per client: {sorted(switches)} "
          f"({'each client switched once, v1 -> v2' if switches == {(1, 2)} else 'NOT one clean switch'})")
    print(f"  ({swap['rps']:.1f} requests/s, p99 {swap['p99']:.0f} ms during the swap)")


if __name__ == "__main__":
    main()

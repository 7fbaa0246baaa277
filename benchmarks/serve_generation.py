"""Served generation: `tuneline serve-model` (LitServe, dynamic batching, batched greedy generation with left padding
and the KV cache) against a naive FastAPI endpoint that calls `transformers.pipeline("text-generation")` once per
request, beside it in the same run, on the same model and settings (greedy, max_new_tokens 32).

usage: python benchmarks/serve_generation.py [--clients 16] [--seconds 30] [--production DIR] [--workers N]
The model: --production (a tuneline text-generation model directory) when given, else the embedded
SmolLM2-135M-Instruct saved as tuneline saves one (its generation_config: greedy, 32 new tokens). Prompts: the
text-generation default's chats (a system instruction and a tweet). Load: `--clients` concurrent clients, one prompt
per request, each sending its next request when the last is answered, for `--seconds` per server after a warm-up.
Printed per server: generated tokens/s (the answers' own token counts, over the time until the last answer came),
requests/s, p50/p95/p99 latency, failures;
then the ratio of generated tokens/s (goal >= 3x, with a lower p99). One run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_throughput import Http, free_port, start, stop, summary, wait_ready  # noqa: E402

MAX_NEW_TOKENS = 32
NAIVE_SERVER = """
import sys
from fastapi import FastAPI
from pydantic import BaseModel
import uvicorn
from transformers import pipeline

generator = pipeline("text-generation", model=sys.argv[1])
app = FastAPI()

class Body(BaseModel):
    inputs: list

@app.post("/predict")
def predict(body: Body):
    out = []
    for messages in body.inputs:
        text = generator(messages, max_new_tokens=%d, do_sample=False)[0]["generated_text"][-1]["content"]
        out.append({"generated_text": text, "answer_tokens": len(generator.tokenizer(text, add_special_tokens=False)
                                                                  ["input_ids"])})
    return {"predictions": out}

@app.get("/ready")
def ready():
    return {"ready": True}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""" % MAX_NEW_TOKENS


def prompts(n: int = 400) -> list[list[dict]]:
    from tasks.config import parse_params
    from tasks.kinds import chat, get_kind

    kind = get_kind("text-generation")
    frame = kind.read_source(parse_params({"task": {"kind": "text-generation"}}).data)
    return [chat.as_turns(m) for m in frame["messages"].sample(n=n, random_state=0)]


def default_model(out: Path) -> Path:
    """The embedded SmolLM2 as tuneline saves a text-generation model: weights, tokenizer, generation_config, kind."""
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.config import GenerateConfig
    from tasks.engine.modeling import generation_config_for
    from tasks.kinds import get_kind, mark_model_kind

    kind = get_kind("text-generation")
    base = kind.default_model()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = kind.load_processor(base)
    model.generation_config = generation_config_for(model, tokenizer, GenerateConfig(max_new_tokens=MAX_NEW_TOKENS))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    mark_model_kind(out, kind)
    return out


def project(root: Path, production: Path, workers) -> Path:
    import yaml

    from tasks.registry.store import Registry

    root.mkdir(parents=True, exist_ok=True)
    serve = {"log_share": 0.0, **({"workers": workers} if workers else {})}
    (root / "params.yaml").write_text(yaml.safe_dump({"task": {"kind": "text-generation"}, "serve": serve}))
    Registry.of_project(root).promote(production, {"version": 1, "decision": {"promoted": True}}, "card")
    return root


async def load(url: str, chats: list, clients: int, seconds: float) -> dict:
    """`clients` concurrent clients for `seconds`, one prompt per request: serve_throughput's run record (latencies,
    failures, the client's CPU) plus the answers' generated tokens."""
    latencies, failures, tokens = [], [], 0
    began = time.perf_counter()
    deadline = began + seconds

    async def client(i: int, http: Http) -> None:
        nonlocal tokens
        k = i
        while time.perf_counter() < deadline:
            messages = chats[k % len(chats)]
            k += clients
            start_at = time.perf_counter()
            try:
                status, body = await http.post(f"{url}/predict", {"inputs": [messages]})
            except http.errors as exc:
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append(body[:200].decode(errors="replace"))
                continue
            latencies.append(time.perf_counter() - start_at)
            tokens += sum(p["answer_tokens"] for p in json.loads(body)["predictions"])

    cpu = time.process_time()
    async with Http("aiohttp", clients) as http:
        await asyncio.gather(*[client(i, http) for i in range(clients)])
    # Rates over the time until the last answer came (a request sent before the deadline is waited for): a slow
    # server's long requests do not count as if they had been answered within `seconds`.
    elapsed = time.perf_counter() - began
    run = {"seconds": elapsed, "latencies": latencies, "failures": failures, "cpu": time.process_time() - cpu}
    return {**summary([run]), "tokens_per_s": tokens / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--production", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None, help="serve.workers (default: params')")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="serve-generation-"))
    model = args.production or default_model(workdir / "model")
    root = project(workdir / "project", model, args.workers)
    chats = prompts()
    results, procs = {}, []
    try:
        for name in ("naive", "tuneline"):
            port, log = free_port(), workdir / f"{name}.log"
            cmd = ([sys.executable, "-c", NAIVE_SERVER, str(root / "models/production"), str(port)] if name == "naive"
                   else [sys.executable, "-m", "tasks.cli", "serve-model", "--project-dir", str(root), "--port",
                         str(port)])
            proc = start(cmd, log, dict(os.environ))
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log)
            asyncio.run(load(url, chats, args.clients, args.warmup))
            results[name] = asyncio.run(load(url, chats, args.clients, args.seconds))
            stop(proc)  # one server at a time: they share two cores
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.clients} clients, 1 prompt per request, greedy, max_new_tokens {MAX_NEW_TOKENS}, {args.seconds:g} s "
          f"per server after {args.warmup:g} s warm-up, {os.cpu_count()} CPUs")
    print("| server | generated tokens/s | requests/s | p50 ms | p95 ms | p99 ms | failed |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:.1f} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['p99']:.0f} | {r['failed']} |")
    naive, ours = results["naive"], results["tuneline"]
    print(f"tuneline / naive generated tokens/s: {ours['tokens_per_s'] / max(naive['tokens_per_s'], 1e-9):.2f}x "
          f"(goal >= 3x); p99 {ours['p99']:.0f} ms vs {naive['p99']:.0f} ms "
          f"({'lower' if ours['p99'] < naive['p99'] else 'NOT lower'})")


if __name__ == "__main__":
    main()

"""Shared fixtures: a tiny BERT built from a config (random weights, no download), throwaway DVC projects, and the
small datasets, helpers and constants more than one test module uses."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.config import DataConfig, ValidateConfig
from tasks.kinds import get_kind

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are for people; keep test logs readable
VENV_BIN = str(Path(sys.executable).parent)


def tool_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PATH=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               DVC_NO_ANALYTICS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def sh(*cmd: str, cwd: Path, check: bool = True, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_texts(n: int = 1500) -> list[str]:
    from tasks.files.assets import embedded_corpus_path

    df = pd.read_csv(embedded_corpus_path(), encoding="latin-1", usecols=["text"], nrows=n)
    return df["text"].astype(str).tolist()


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab(texts: list[str], n_words: int = 600) -> list[str]:
    """Special tokens, characters and continuation characters, then the commonest words: the same list every time
    (a trained WordPiece vocab orders ties differently from one process to the next)."""
    import re
    from collections import Counter

    words = Counter(w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower()))
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789") | set("@#!?.,:;'/-_&"))
    common = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1][:n_words]
    return SPECIAL_TOKENS + chars + [f"##{c}" for c in chars] + common


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a small word vocab from a few tweets: the real code path, in seconds."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)  # the same random "pre-trained" weights in every session
    out = tmp_path_factory.mktemp("tiny-bert")
    (out / "vocab.txt").write_text("\n".join(tiny_vocab(tiny_texts())) + "\n", encoding="utf-8")
    # transformers 5 ignores BertTokenizerFast(vocab_file=...); wrapping a tokenizers object keeps the vocabulary.
    backend = BertWordPieceTokenizer(str(out / "vocab.txt"), lowercase=True)
    tokenizer = BertTokenizerFast(tokenizer_object=backend._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_params(model_dir: Path, **sections) -> dict:
    """The shipped params.yaml with a small, fast budget; `sections` override per key, e.g. train={"epochs": 2}."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["preprocess"].update(max_train_samples=240, max_val_samples=90, max_test_samples=120, max_length=32)
    params["train"].update(model=str(model_dir), epochs=1, batch_size=16, learning_rate=1e-3, num_threads=1)
    # A random tiny model loses to the TF-IDF baseline; tests of the baseline check turn it back on.
    params["promote"]["min_over_baseline"] = None
    params["serve"]["workers"] = 1  # a model server's start loads the model once (tests run two at a time on 2 cores)
    for section, values in sections.items():
        params[section].update(values)
    return params


def make_project(root: Path, params: dict) -> Path:
    """A git + DVC repo with the project's dvc.yaml and the given params, committed like a fresh clone."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))  # code deps
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh(sys.executable, "-m", "dvc", "init", "-q", cwd=root)
    sh(sys.executable, "-m", "dvc", "config", "core.autostage", "true", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "init", cwd=root)
    return root


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "dvc", *args, cwd=project, check=check)


def ran_stages(output: str) -> list[str]:
    import re

    return re.findall(r"Running stage '(\w+)'", output)


def tree_digest(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory):
    """A real Prefect server with its own PREFECT_HOME, stopped by PID afterwards."""
    from tasks.orchestration import prefect_server as serving

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = serving.api_url(port)
    # A `serve` process looks for runs to start every PREFECT_RUNNER_POLL_FREQUENCY seconds (10 by default): each
    # deployment run a test starts waited 5 s on average for that, and nothing else.
    env = tool_env(**serving.server_env(url, home), PREFECT_RUNNER_POLL_FREQUENCY="2")
    server = serving.start_server(port, home / "server.log", env)
    try:
        serving.wait_healthy(url, timeout=240, proc=server)
        yield env
    finally:
        serving.terminate(server)


def wait_for_deployments(project: Path, env: dict, names: list[str], serve_proc, log: Path, timeout: float = 120) -> None:
    """Until the serve process has registered each deployment for *this* project (a server outlives test projects,
    and a deployment name keeps the parameters of whoever served it last). Asked through the REST API: a `prefect`
    CLI call per poll would cost seconds of CPU each."""
    import time

    deadline = time.monotonic() + timeout
    pending = list(names)
    with api_client(env) as api:
        while pending:
            assert serve_proc.poll() is None, log.read_text()
            shown = api.get(f"/deployments/name/{pending[0]}")
            if shown.status_code == 200 and (shown.json().get("parameters") or {}).get("project_dir") == str(
                    project.resolve()):
                pending.pop(0)
                continue
            assert time.monotonic() < deadline, f"deployment {pending[0]} not served for {project}:\n{shown.text}"
            time.sleep(1)


@contextmanager
def api_client(env: dict):
    """An httpx client for the Prefect REST API as the UI uses it: with the auth string when the server has one,
    and a CSRF token (tuneline's servers protect state-changing requests, POST /filter included)."""
    import uuid

    import httpx

    auth = env.get("PREFECT_API_AUTH_STRING")
    with httpx.Client(base_url=env["PREFECT_API_URL"], timeout=30,
                      auth=tuple(auth.split(":", 1)) if auth else None) as client:
        token = client.get("/csrf-token", params={"client": (name := uuid.uuid4().hex)})
        if token.status_code == 200:
            client.headers.update({"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": name})
        yield client


def all_flow_run_artifacts(env: dict, flow_run_id: str) -> list[dict]:
    """Every artifact a flow run and its subflows created, read through the same server API the UI uses."""
    with api_client(env) as api:
        children = api.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})
        children.raise_for_status()
        run_ids = [flow_run_id, *(run["id"] for run in children.json())]
        artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": run_ids}}})
        artifacts.raise_for_status()
    return artifacts.json()


def flow_run_artifacts(env: dict, flow_run_id: str) -> dict[str, str]:
    """Key -> markdown of the named artifacts (what the UI's Artifacts tab lists by key); progress artifacts have
    no key."""
    return {a["key"]: a["data"] for a in all_flow_run_artifacts(env, flow_run_id) if a["key"]}


def task_run_logs(env: dict, flow_run_id: str, task_run_name: str) -> list[str]:
    """The log messages of one task run of a flow run (what the UI shows under that task run)."""
    with api_client(env) as api:
        runs = api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}},
                                                   "task_runs": {"name": {"any_": [task_run_name]}}})
        runs.raise_for_status()
        ids = [r["id"] for r in runs.json()]
        logs = api.post("/logs/filter", json={"logs": {"task_run_id": {"any_": ids}}, "limit": 200})
        logs.raise_for_status()
    return [entry["message"] for entry in logs.json()]


def created_flow_run_id(deployment_run_stdout: str) -> str:
    """`prefect deployment run` prints the new flow run's UUID."""
    import re

    match = re.search(r"UUID: ([0-9a-f-]{36})", deployment_run_stdout)
    assert match, deployment_run_stdout
    return match.group(1)


def make_images(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """An ImageFolder of small noisy PNGs whose class is their colour (red/green/blue): learnable in seconds."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (int(rng.integers(36, 80)), int(rng.integers(36, 80)), 3)
            pixels = np.clip(rng.normal(colour, 50, size=shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide Llama with a byte-level BPE (no chat template: the kind's plain one applies), for the
    text-generation kind; its vocabulary comes from the colour questions tests/test_generation.py asks."""
    from tests.test_generation import build_decoder

    return build_decoder("llama", tmp_path_factory.mktemp("tiny-decoder"))


@pytest.fixture(scope="session")
def tiny_resnet_dir(tmp_path_factory) -> Path:
    """A 2-stage, 16-channel ResNet from a config (random weights) with an image processor: the real code path."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-resnet")
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory, tiny_resnet_dir) -> Path:
    """The tiny ResNet saved as tuneline saves a trained image classifier (new 3-class head, kind marker)."""
    from tasks.engine.modeling import load_model, save_classifier
    from tasks.kinds import get_kind, mark_model_kind

    kind = get_kind("image-classification")
    out = tmp_path_factory.mktemp("tiny-image-model")
    model = load_model(str(tiny_resnet_dir), ["blue", "green", "red"], auto_class=kind.auto_class)
    save_classifier(model, kind.load_processor(str(tiny_resnet_dir)), out, str(tiny_resnet_dir))
    mark_model_kind(out, kind)
    return out


# --- constants and data shared by several test modules ---------------------------------------------------------------

ALL = ["prepare", "validate", "preprocess", "train", "evaluate", "reference"]
LENIENT = ValidateConfig(min_rows=1, min_rows_per_class=1, max_quarantine_share=1.0)
LABELS = ["negative", "neutral", "positive"]
TOKEN, IMAGE = get_kind("token-classification"), get_kind("image-classification")


def user_frame(n_per_class: int = 30) -> pd.DataFrame:
    rows = [{"review": f"{word} item number {i} {word}", "stars": label, "extra": i}
            for label, word in (("one", "awful"), ("two", "poor"), ("three", "fine"), ("four", "great"))
            for i in range(n_per_class)]
    return pd.DataFrame(rows)


def user_cfg(path, **kw) -> DataConfig:
    return DataConfig(path=str(path), text_column="review", label_column="stars", include_pattern=None, **kw)


@pytest.fixture()
def processed(tmp_path, tiny_model_dir):
    """A tokenized 4-class dataset on the tiny model (user_frame through prepare, validate and preprocess)."""
    from tasks.config import PreprocessConfig
    from tasks.stages import prepare, preprocess, validate

    src = tmp_path / "reviews.csv"
    user_frame(40).to_csv(src, index=False)
    raw = prepare.run(user_cfg(src), tmp_path / "raw.parquet").output
    validate.run(user_cfg(src), ValidateConfig(), raw, tmp_path / "ok.parquet", tmp_path / "q.csv",
                 tmp_path / "rep.json", str(src))
    cfg = PreprocessConfig(max_length=16)
    return preprocess.run(cfg, str(tiny_model_dir), tmp_path / "ok.parquet", tmp_path / "processed")


def splits(processed_dir, tokenizer):
    """The engine's training split and the text kind's validator, as the train stage builds them."""
    import json

    from tasks.engine.splits import TokenizedSplit
    from tasks.kinds.base import validator
    from tasks.kinds.text import TextKind

    labels = json.loads((processed_dir / "labels.json").read_text())
    val = pd.read_parquet(processed_dir / "val.parquet")
    return (TokenizedSplit.read(processed_dir / "train.parquet", tokenizer.pad_token_id),
            validator(TextKind(), val, tokenizer, labels), labels)


@pytest.fixture(scope="module")
def registry_project(tmp_path_factory, tiny_model_dir):
    """Processed data plus two trained candidates: one that learned the task, one that did not."""
    from tasks.config import EvaluateConfig, Params, PreprocessConfig, TrainConfig
    from tasks.stages import evaluate, prepare, preprocess, train, validate

    root = tmp_path_factory.mktemp("registry-project")
    src = root / "reviews.csv"
    frame = user_frame(40)
    frame["topic"] = ["a", "b"] * (len(frame) // 2)
    frame.to_csv(src, index=False)
    data_cfg = user_cfg(src)
    raw = prepare.run(data_cfg, root / "raw.parquet").output
    validate.run(data_cfg, ValidateConfig(), raw, root / "ok.parquet", root / "q.csv", root / "v.json", str(src))
    processed = preprocess.run(PreprocessConfig(max_length=16), str(tiny_model_dir), root / "ok.parquet",
                               root / "processed").output_dir
    params = Params(data=data_cfg, preprocess=PreprocessConfig(max_length=16),
                    train=TrainConfig(model=str(tiny_model_dir), num_threads=1, batch_size=8),
                    evaluate=EvaluateConfig(slice_column="topic", min_slice_rows=5))
    candidates = {}
    for name, lr, epochs in (("good", 3e-3, 20), ("bad", 1e-12, 1)):
        cfg = params.train.model_copy(update=dict(learning_rate=lr, epochs=epochs, warmup_ratio=0.0,
                                                  early_stopping_patience=epochs))
        model_dir = root / f"candidate-{name}"
        train.run(cfg, processed, model_dir, root / f"train-{name}")
        evaluate.run(params.evaluate, processed, model_dir, root / f"metrics-{name}.json", root / f"plots-{name}")
        candidates[name] = model_dir
    return root, params, processed, candidates


# --- the CLI in a throwaway project, and waiting on what it leaves behind -------------------------------------------

def tuneline(project: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "tasks.cli", *args, cwd=project, env=env, check=check)


def wait_for(predicate, timeout: float, what: str, poll: float = 2.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def registry_records(project: Path) -> list[dict]:
    import json

    events = project / "models/registry/events.jsonl"
    lines = events.read_text().splitlines() if events.exists() else []
    return [json.loads(line)["record"] for line in lines if json.loads(line)["event"] in ("promoted", "rejected")]


def new_reviews(path: Path) -> Path:
    rows = [{"review": f"{word} order {1000 + i} {word}", "stars": label}
            for label, word in (("one", "awful"), ("two", "poor"), ("three", "fine"), ("four", "great"))
            for i in range(25)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# --- the model server as a process ------------------------------------------------------------------------------

def start_model_server(root: Path, port: int, log: Path, host: str = "127.0.0.1",
                       env: dict | None = None) -> subprocess.Popen:
    """`tuneline serve-model` for a project, as its own process group (logs to `log`)."""
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", "serve-model", "--project-dir", str(root), "--host",
                             host, "--port", str(port)], env=env or tool_env(), stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_model_ready(url: str, proc: subprocess.Popen, log: Path, headers: dict | None = None, timeout: float = 120):
    """Until the model server's /ready says 200 (every worker has a model loaded)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/ready", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server not ready: {log.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen) -> None:
    from tasks.orchestration.prefect_server import terminate

    terminate(proc, timeout=20)

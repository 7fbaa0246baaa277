"""The model server, as a real process answering real HTTP on loopback: the answers of `tuneline predict`, health,
readiness, metrics and docs; requests refused with the limit named and never a 500; a hot swap under load with no
failed request; a tampered version never served; traffic and feedback back into the drop folder; the token."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tasks.registry import promotion
from tasks.registry.store import Registry
from tests.conftest import (free_port, start_model_server, stop_process, tiny_params, tool_env, user_frame,
                            wait_model_ready)

pytestmark = pytest.mark.integration
TOKEN = "a-long-random-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write_params(root: Path, model_dir: Path, **sections) -> None:
    params = tiny_params(model_dir, **sections)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def text_project(tmp_path_factory, registry_project):
    """A project whose registry holds v1 (production) and v2 of a text classifier, and params for serving it."""
    root_dir, params, processed, candidates = registry_project
    root = tmp_path_factory.mktemp("served-text")
    registry = Registry.of_project(root)
    free = params.model_copy(update={"promote": params.promote.model_copy(
        update={"min_over_baseline": None, "min_delta": -1.0, "max_class_drop": 1.0})})
    for name in ("bad", "good"):
        promotion.run(free, processed, candidates[name], root_dir / f"metrics-{name}.json", registry, root)
    registry.rollback(1)
    write_params(root, Path(params.train.model), data={"text_column": "review", "label_column": "stars",
                                                       "include_pattern": None},
                 serve={"workers": 2, "rotate_rows": 6, "max_rows_per_request": 8, "max_text_chars": 300,
                        "max_body_bytes": 20_000, "reload_check_s": 0.3},
                 inference={"precision": "fp32"})  # compared with predict to 1e-5: one arithmetic for both
    return root, registry


def test_the_server_answers_like_tuneline_predict_swaps_under_load_and_closes_the_traffic_loop(text_project,
                                                                                              tmp_path):
    from tasks.stages import predict

    root, registry = text_project
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    server = start_model_server(root, port, log, host="0.0.0.0", env=tool_env(TUNELINE_SERVE_TOKEN=TOKEN))
    try:
        wait_model_ready(url, server, log, AUTH)
        api = httpx.Client(base_url=url, headers=AUTH, timeout=30)

        # The token: every endpoint but /health wants it.
        assert httpx.post(f"{url}/predict", json={"inputs": ["x"]}).status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/health").json() == {"status": "alive"}

        # The answers of `tuneline predict` on the same inputs: labels equal, probabilities within 1e-5.
        texts = list(user_frame(3)["review"]) + ["something entirely different", "awful", ""]
        pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
        predict.run(tmp_path / "in.csv", tmp_path / "out.csv", registry.production, precision="fp32")
        expected = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
        answers = []
        for start_row in range(0, len(texts), 8):
            answered = api.post("/predict", json={"inputs": texts[start_row:start_row + 8]})
            assert answered.status_code == 200, answered.text
            body = answered.json()
            assert body["model_version"] == 1 and body["request_id"] == answered.headers["x-request-id"]
            answers += body["predictions"]
        assert [a["label"] for a in answers] == list(expected["label"])
        for answer, (_, row) in zip(answers, expected.iterrows()):
            assert answer["score"] == pytest.approx(max(answer["probabilities"].values()))
            for name, p in answer["probabilities"].items():
                assert p == pytest.approx(row[f"prob_{name}"], abs=1e-5)

        # Bad requests: refused with the field or the limit named, never a 500 with a traceback.
        refused = {
            b'{"inputs": ["a", ': 400, b"[1, 2]": 422, b'{"inputs": "text"}': 422, b'{"inputs": []}': 422,
            b'{"inputs": [1]}': 422, json.dumps({"inputs": ["x"] * 9}).encode(): 413,
            json.dumps({"inputs": ["y" * 301]}).encode(): 413, b'{"inputs": ["' + b"z" * 20_001 + b'"]}': 413}
        for body, status in refused.items():
            answered = api.post("/predict", content=body)
            assert answered.status_code == status, (body[:40], answered.text)
            error = answered.json()["error"]
            assert "Traceback" not in error and ("inputs" in error or "body" in error)
        assert "serve.max_rows_per_request=8" in api.post("/predict", json={"inputs": ["x"] * 9}).json()["error"]
        assert api.get("/ready").status_code == 200  # the workers live on

        # Hot swap under load: 4 clients hammer the server while production moves to v2; none fails, and each
        # sees the version switch exactly once.
        seen: dict[int, list] = {i: [] for i in range(4)}
        failures: list = []
        stop_load = threading.Event()

        def client(i: int) -> None:
            with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
                while not stop_load.is_set():
                    answered = c.post("/predict", json={"inputs": [f"awful item {i}", "great item"]})
                    if answered.status_code != 200:
                        failures.append(answered.text)
                        continue
                    version = answered.json()["model_version"]
                    if not seen[i] or seen[i][-1] != version:
                        seen[i].append(version)

        clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for c in clients:
            c.start()
        time.sleep(2)
        registry.rollback(2)  # what `tuneline rollback v2` (or a promotion, or a pull) does to the link
        time.sleep(6)
        stop_load.set()
        for c in clients:
            c.join()
        assert failures == [] and all(v == [1, 2] for v in seen.values()), (failures[:3], seen)
        ready = api.get("/ready").json()
        assert sorted(w["version"] for w in ready["workers"]) == [2, 2]  # both workers swapped

        # A version whose weights differ from its record is never switched to: v2 stays, /ready says why.
        weights = registry.version_dir(1) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 0xFF]))
        registry.switch_production(1)  # the link moved by hand, past rollback's own check
        time.sleep(3)
        ready = api.get("/ready").json()
        assert [w["version"] for w in ready["workers"]] == [2, 2]
        assert ready["errors"] and all("does not match the sha256" in e for e in ready["errors"])
        assert api.post("/predict", json={"inputs": ["x"]}).json()["model_version"] == 2
        registry.switch_production(2)

        # Traffic: logged rows go to the drop folder as batches; /feedback labels join the next one.
        asked = api.post("/predict", json={"inputs": ["awful item 1", "great item 2"]}).json()
        assert api.post("/feedback", json={"request_id": asked["request_id"], "labels": ["one", "four"]}
                        ).status_code == 202
        for _ in range(3):
            api.post("/predict", json={"inputs": ["filler one", "filler two", "filler three"]})
        time.sleep(2)
        incoming = root / "data/incoming"
        labelled = [pd.read_parquet(p) for p in incoming.glob("traffic-*-labelled.parquet")]
        assert labelled, sorted(p.name for p in incoming.iterdir())
        rows = pd.concat(labelled)
        assert {("awful item 1", "one"), ("great item 2", "four")} <= set(zip(rows["review"], rows["stars"]))
        unlabelled = [p for p in incoming.glob("traffic-*.parquet") if "labelled" not in p.name]
        assert unlabelled and "stars" not in pd.read_parquet(unlabelled[0]).columns

        metrics = api.get("/metrics").text
        for name in ("tuneline_requests_total", "tuneline_request_errors_total", "tuneline_request_seconds_bucket",
                     "tuneline_batch_requests_bucket", "tuneline_model_version", "tuneline_traffic_rows_logged"):
            assert name in metrics, name
        assert api.get("/docs").status_code == 200
        assert {"/predict", "/feedback", "/ready", "/metrics"} <= set(api.get("/openapi.json").json()["paths"])

        # Rows logged since the last rotation are not lost when the server stops: they go in as a batch then.
        before = set(incoming.glob("traffic-*.parquet"))
        assert api.post("/predict", json={"inputs": ["the last words before shutdown"]}).status_code == 200
        time.sleep(1)  # the row reaches the logger
    finally:
        stop_process(server)
    last = [pd.read_parquet(p) for p in set(incoming.glob("traffic-*.parquet")) - before]
    assert last and "the last words before shutdown" in set(pd.concat(last)["review"]), sorted(incoming.iterdir())


def test_a_server_beyond_loopback_without_a_token_refuses_to_start(text_project, tmp_path):
    root, _ = text_project
    env = tool_env()
    env.pop("TUNELINE_SERVE_TOKEN", None)
    refused = subprocess.run([sys.executable, "-m", "tasks.cli", "serve-model", "--project-dir", str(root), "--host",
                              "0.0.0.0", "--port", str(free_port())], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "needs a bearer token: set TUNELINE_SERVE_TOKEN" in refused.stderr


def png(colour: tuple[int, int, int]) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["token-classification", "image-classification", "text-regression"])
def test_token_image_and_regression_servers_answer_like_tuneline_predict(kind, tmp_path, tiny_model_dir,
                                                                         tiny_image_model):
    from tasks.engine.modeling import load_model, save_classifier
    from tasks.kinds import get_kind, mark_model_kind
    from tasks.stages import predict

    root = tmp_path / "p"
    registry = Registry.of_project(root)
    model = tmp_path / "model"
    if kind in ("token-classification", "text-regression"):
        k = get_kind(kind)
        labels = ["B-PER", "I-PER", "O"] if kind == "token-classification" else ["score"]
        saved = load_model(str(tiny_model_dir), labels, auto_class=k.auto_class, problem_type=k.problem_type)
        save_classifier(saved, k.load_processor(str(tiny_model_dir)), model, str(tiny_model_dir))
        mark_model_kind(model, k)
    else:
        model = tiny_image_model
    registry.promote(Path(model), {"version": 1, "decision": {"promoted": True}}, "card")
    write_params(root, tiny_model_dir, task={"kind": kind}, inference={"precision": "fp32"})
    port, log = free_port(), tmp_path / "server.log"
    server = start_model_server(root, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_model_ready(url, server, log)
        if kind == "text-regression":
            texts = ["a great flight", "awful, delayed again", "ok"]
            pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
            predict.run(tmp_path / "in.csv", tmp_path / "out.csv", registry.production, precision="fp32")
            expected = pd.read_csv(tmp_path / "out.csv")["score"]
            answers = httpx.post(f"{url}/predict", json={"inputs": texts}, timeout=30).json()["predictions"]
            assert [set(a) for a in answers] == [{"score"}] * 3
            assert [a["score"] for a in answers] == pytest.approx(list(expected), abs=1e-5)
        elif kind == "token-classification":
            texts = ["Anna Smith flew to Paris", "no names here, at all!"]
            pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
            predict.run(tmp_path / "in.csv", tmp_path / "out.jsonl", registry.production, precision="fp32")
            expected = pd.read_json(tmp_path / "out.jsonl", lines=True)
            answers = httpx.post(f"{url}/predict", json={"inputs": texts}, timeout=30).json()["predictions"]
            def spans(entities: list[dict]) -> list[tuple]:
                return [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities]

            assert [spans(a["entities"]) for a in answers] == [spans(e) for e in expected["entities"]]
            assert [e["score"] for a in answers for e in a["entities"]] == pytest.approx(
                [e["score"] for ents in expected["entities"] for e in ents], abs=1e-5)
            assert [a["tags"] for a in answers] == list(expected["predicted_tags"])
            for text, answer in zip(texts, answers):
                assert all(text[e["start"]:e["end"]] == e["word"] for e in answer["entities"])
        else:
            images = {"red.png": png((200, 30, 30)), "blue.png": png((30, 30, 200))}
            folder = tmp_path / "images"
            folder.mkdir()
            for name, data in images.items():
                (folder / name).write_bytes(data)
            predict.run(folder, tmp_path / "out.csv", registry.production, precision="fp32")
            expected = pd.read_csv(tmp_path / "out.csv").sort_values("path")
            inputs = [base64.b64encode(images[Path(p).name]).decode() for p in expected["path"]]
            as_json = httpx.post(f"{url}/predict", json={"inputs": inputs}, timeout=30).json()["predictions"]
            uploaded = httpx.post(f"{url}/predict", timeout=30, files=[
                ("inputs", (Path(p).name, images[Path(p).name], "image/png")) for p in expected["path"]]).json()
            assert [a["label"] for a in as_json] == [a["label"] for a in uploaded["predictions"]] == \
                list(expected["label"])
            for answer, (_, row) in zip(as_json, expected.iterrows()):
                for name, p in answer["probabilities"].items():
                    assert p == pytest.approx(row[f"prob_{name}"], abs=1e-5)
            bad = httpx.post(f"{url}/predict", json={"inputs": ["not base64 !"]}, timeout=30)
            assert bad.status_code == 400 and "inputs[0]: not valid base64" in bad.json()["error"]
            junk = httpx.post(f"{url}/predict", json={"inputs": [base64.b64encode(b"not an image").decode()]})
            assert junk.status_code == 422 and "rule: unreadable" in junk.json()["error"]
    finally:
        stop_process(server)

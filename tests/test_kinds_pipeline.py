"""End to end for the token, image, regression and generation kinds on tiny models: a real Prefect deployment run with a
`task.kind` override (every stage through `dvc repro`, the gate, the registry), then plain `dvc repro` with nothing to
redo, ingest, bad data stopped at validate, `tuneline predict`, and the production directory loading with the
matching `transformers.pipeline` task. (Rollback and `tuneline promote` do not depend on the kind: test_registry.)"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.orchestration import prefect_server as serving
from tests.test_generation import COLOURS, colour_rows
from tests.test_kind_regression import ratings
from tests.conftest import (ALL, created_flow_run_id, dvc, flow_run_artifacts, make_images, make_project, ran_stages,
                            sh, tiny_params, tree_digest, tuneline, wait_for_deployments)

pytestmark = pytest.mark.integration
# The candidate is promoted whatever a tiny random model scores.
ANY_CANDIDATE = {"min_delta": -1.0, "max_class_drop": 1.0, "max_set_drop": 1.0}
# The deployment run below sets the kind through the API: the project's owner allows that key.
API_KEYS = {"override_keys": ["task.kind", "train.epochs"]}


def kind_params(kind: str, tmp: Path, tiny_model_dir: Path, tiny_resnet_dir: Path, tiny_decoder_dir: Path) -> dict:
    if kind == "token-classification":  # the embedded WNUT-16 tweets, capped small
        return tiny_params(tiny_model_dir, task={"kind": kind}, promote=ANY_CANDIDATE,
                           preprocess={"max_length": 48}, control=API_KEYS)
    if kind == "text-regression":  # reviews with star ratings, a user's own file
        source = tmp / "ratings.csv"
        ratings().to_csv(source, index=False)
        return tiny_params(tiny_model_dir, task={"kind": kind}, promote={**ANY_CANDIDATE, "min_delta": -10.0},
                           data={"path": str(source), "text_column": "review", "label_column": "stars"},
                           control=API_KEYS)
    if kind == "text-generation":  # prompts and answers, a user's own file; the kind's auto settings (LoRA)
        source = tmp / "colours.jsonl"
        pd.DataFrame(colour_rows(60)).to_json(source, orient="records", lines=True)
        return tiny_params(tiny_decoder_dir, task={"kind": kind}, data={"path": str(source)},
                           promote={**ANY_CANDIDATE, "min_delta": -10.0},
                           preprocess={"max_length": "auto", "max_train_samples": "auto"},
                           generate={"max_new_tokens": 4}, monitor={"reference_rows": 50}, control=API_KEYS)
    images = make_images(tmp / "images", per_class=16)
    return tiny_params(tiny_resnet_dir, task={"kind": kind}, data={"path": str(images)}, promote=ANY_CANDIDATE,
                       preprocess={"image_size": 32}, train={"learning_rate": 3e-3, "epochs": 2}, control=API_KEYS)


@pytest.mark.parametrize("kind", ["token-classification", "image-classification", "text-regression",
                                  "text-generation"])
def test_kind_runs_through_dvc_prefect_gate_registry_and_predict(prefect_env, tmp_path, tiny_model_dir,
                                                                  tiny_resnet_dir, tiny_decoder_dir, kind):
    from transformers import pipeline

    env, log = prefect_env, tmp_path / "serve.log"
    project = make_project(tmp_path / "p", kind_params(kind, tmp_path, tiny_model_dir, tiny_resnet_dir,
                                                       tiny_decoder_dir))
    # The project's deployments (a deployment's project_dir is fixed when it is made), serving while dvc runs.
    serve = serving.start_serving(project, log, env)
    try:
        kind_end_to_end(project, env, log, serve, kind, tmp_path, pipeline)
    finally:
        serving.terminate(serve)


def kind_end_to_end(project: Path, env: dict, log: Path, serve, kind: str, tmp_path: Path, pipeline) -> None:
    # The deployment, with the kind as an override: the flow runs every stage through `dvc repro`, gates, promotes.
    wait_for_deployments(project, env, ["training/default"], serve, log)
    overrides = json.dumps({"task.kind": kind, "train.epochs": 2})
    run = sh(sys.executable, "-m", "prefect", "deployment", "run", "training/default", "--watch", "--watch-timeout",
             "400", "--param", f"overrides={overrides}", cwd=project, env=env, check=False, timeout=450)
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr + log.read_text()[-3000:]
    shown = flow_run_artifacts(env, created_flow_run_id(run.stdout))
    assert shown["promotion-decision"].startswith("# Candidate v1: PROMOTED")
    import yaml

    assert set(yaml.safe_load((project / "dvc.lock").read_text())["stages"]) == set(ALL)
    assert f"kind: {kind}" in (project / "dvc.lock").read_text()
    assert dvc_clean(project)  # the flow recorded every stage in dvc.lock and versioned the registry (dvc add)
    assert ran_stages(dvc(project, "repro").stdout) == []  # and plain `dvc repro` agrees: nothing to redo
    metrics = json.loads((project / "reports/metrics.json").read_text())
    scores = ({"rmse", "mae", "r2", "spearman"} if kind == "text-regression" else
              {"answer_f1", "exact_match", "chrf", "rouge_l", "eval_loss"} if kind == "text-generation" else
              {"macro_f1", "accuracy", "per_class"})
    assert scores <= set(metrics["model"]) and metrics["baseline_name"] in metrics

    listed = tuneline(project, env, "models")
    assert "v1" in listed.stdout and "production" in listed.stdout
    ingested = tuneline(project, env, "ingest", str(a_batch(project, kind, tmp_path)))
    assert "ingest: batch b0001-" in ingested.stdout and dvc_clean(project)

    bad_data_changes_nothing(project, kind, tmp_path)
    production = str(project / "models/production")
    labels = json.loads((project / "data/processed/labels.json").read_text())
    if kind == "text-regression":
        texts = ["awful item", "great item"]
        pd.DataFrame({"review": texts}).to_csv(project / "in.csv", index=False)
        tuneline(project, env, "predict", str(project / "in.csv"), "--column", "review", "--precision", "fp32", "-o",
                 str(project / "out.csv"))
        out = pd.read_csv(project / "out.csv")
        assert list(out.columns) == ["review", "score"]
        assert [r["score"] for r in pipeline("text-classification", model=production)(texts)] == pytest.approx(
            list(out["score"]), abs=1e-5)
    elif kind == "text-generation":
        prompts = ["Which colour is item 3?", "Which colour is item 10?"]
        pd.DataFrame({"prompt": prompts}).to_json(project / "in.jsonl", orient="records", lines=True)
        tuneline(project, env, "predict", str(project / "in.jsonl"), "--precision", "fp32", "-o",
                 str(project / "out.jsonl"))
        out = pd.read_json(project / "out.jsonl", lines=True, dtype=False)
        generator = pipeline("text-generation", model=production)
        assert [generator([{"role": "user", "content": p}])[0]["generated_text"][-1]["content"] for p in prompts] \
            == list(out["generated_text"])
        card = (project / "models/production/README.md").read_text()
        assert "pipeline_tag: text-generation" in card and "answer-F1" in card
    elif kind == "token-classification":
        ner = pipeline("token-classification", model=production, aggregation_strategy="simple")
        found = ner("Barack Obama visited the Empire State Building in New York")
        assert all(e["entity_group"] in {t[2:] for t in labels if t != "O"} for e in found)
        src = project / "in.jsonl"
        pd.DataFrame({"id": [1, 2], "text": ["Justin Bieber sang in Paris", "no entities here at all"]}).to_json(
            src, orient="records", lines=True)
        tuneline(project, env, "predict", str(src), "-o", str(project / "out.jsonl"))
        out = pd.read_json(project / "out.jsonl", lines=True)
        assert list(out["id"]) == [1, 2] and {"entities", "predicted_tags"} <= set(out.columns)
        for text, ents in zip(out["text"], out["entities"]):
            assert all(text[e["start"]:e["end"]] == e["word"] for e in ents)  # character spans into the input
    else:
        clf = pipeline("image-classification", model=production)
        image = next((tmp_path / "images" / "red").glob("*.png"))
        assert clf(str(image))[0]["label"] in labels
        tuneline(project, env, "predict", str(tmp_path / "images" / "blue"), "-o", str(project / "out.csv"))
        out = pd.read_csv(project / "out.csv")
        assert len(out) == 16 and set(out["label"]) <= set(labels)
        assert ((out.filter(like="prob_").sum(axis=1) - 1).abs() < 1e-4).all()


def dvc_clean(project: Path) -> bool:
    return dvc(project, "status", "--json").stdout.strip() in ("{}", "")


def a_batch(project: Path, kind: str, tmp: Path) -> Path:
    """A batch of new rows of the kind (enough to pass validate.min_rows), as a user would drop it."""
    if kind == "text-regression":
        batch = tmp / "new-ratings.csv"
        pd.DataFrame({"review": [f"a fine thing {i}" for i in range(24)], "stars": [2.0 + i % 3 for i in range(24)]}).to_csv(
            batch, index=False)
        return batch
    if kind == "text-generation":  # chat turns, the answer last, as the messages column
        batch = tmp / "chats.jsonl"
        pd.DataFrame({"messages": [[{"role": "user", "content": f"Which colour is item {100 + i}?"},
                                    {"role": "assistant", "content": COLOURS[i % 4]}] for i in range(24)]}).to_json(
            batch, orient="records", lines=True)
        return batch
    if kind == "token-classification":
        batch = tmp / "batch.jsonl"
        pd.DataFrame({"tokens": [[f"Anna{i}", "flew", "home", f"day{i}"] for i in range(24)],
                      "tags": [["B-person", "O", "O", "O"]] * 24}).to_json(batch, orient="records", lines=True)
        return batch
    batch = tmp / "images" / "batch.csv"  # paths relative to the table's folder
    rows = [(f"{colour}/{i}.png", colour) for colour in ("red", "green", "blue") for i in range(8)]
    pd.DataFrame(rows, columns=["image", "sentiment"]).to_csv(batch, index=False)
    return batch


def bad_data_changes_nothing(project: Path, kind: str, tmp: Path) -> None:
    """Every row of the new source breaks a rule: validate stops the run naming the file and the rule; the accepted
    data and production stay byte for byte as they were."""
    import yaml
    from PIL import Image
    import numpy as np

    if kind == "text-regression":
        bad = tmp / "bad-ratings.csv"
        pd.DataFrame({"review": [f"text {i}" for i in range(30)], "stars": "lots"}).to_csv(bad, index=False)
        rule = "non_numeric_target"
    elif kind == "text-generation":
        bad = tmp / "bad-chats.jsonl"
        pd.DataFrame({"prompt": [f"question {i}?" for i in range(30)], "response": [""] * 30}).to_json(
            bad, orient="records", lines=True)
        rule = "blank_response"
    elif kind == "token-classification":
        bad = tmp / "bad.conll"
        bad.write_text("".join(f"word{i} I-person\nnext O\n\n" for i in range(30)), encoding="utf-8")  # I- without B-
        rule = "bio_order"
    else:
        bad = tmp / "bad-images"
        for i in range(30):
            (bad / "red").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "red" / f"{i}.png")  # all below min_image_side
        rule = "tiny_image"
    before = {d: tree_digest(project / d) for d in ("data/validated", "models/registry")}
    link = (project / "models/production").resolve()
    params_file = project / "params.yaml"
    saved = params_file.read_text()
    params = yaml.safe_load(saved)
    params["data"]["path"] = str(bad)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        failed = dvc(project, "repro", check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0 and str(bad) in output and rule in output and "Traceback" not in output
        assert ran_stages(failed.stdout)[-1] == "validate"
        assert {d: tree_digest(project / d) for d in before} == before
        assert (project / "models/production").resolve() == link
    finally:
        params_file.write_text(saved)

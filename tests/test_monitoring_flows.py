"""Monitoring and retraining against a real Prefect server on 127.0.0.1 and real `dvc repro`: the scheduled monitoring
deployment processes a dropped batch, its drift event triggers the retraining deployment, and a worse retrained model
changes nothing."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from tasks.orchestration import prefect_server as serving
from tasks.config import load_params
from tests.conftest import (created_flow_run_id, flow_run_artifacts, free_port, make_project, new_reviews,
                            registry_records, sh, start_model_server, stop_process, tiny_params, tree_digest, tuneline,
                            user_frame, wait_for, wait_for_deployments, wait_model_ready)

pytestmark = pytest.mark.integration


def test_served_traffic_drifts_monitoring_retrains_and_the_running_server_answers_with_the_new_version(
        prefect_env, tmp_path, tiny_model_dir):
    """The whole loop, with nobody in it: v1 is served over HTTP; clients send tweets of other topics and their true
    labels (/feedback); the server's traffic log drops them as batches; the scheduled monitoring deployment finds
    drift; its event triggers the retraining deployment; v2 passes the gate; the server, never restarted, answers
    with v2."""
    import httpx
    import pandas as pd

    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir, train={"epochs": 2},
                                                        serve={"rotate_rows": 400, "reload_check_s": 0.5}))
    tuneline(project, prefect_env, "run")  # v1 on the airline topic
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model_server = start_model_server(project, port, tmp_path / "model-server.log")
    serve = serving.start_serving(project, tmp_path / "serve.log", prefect_env)
    try:
        wait_for_deployments(project, prefect_env, ["monitoring/scheduled", "retraining/nightly"], serve,
                             tmp_path / "serve.log")
        automations = sh(sys.executable, "-m", "prefect", "automation", "ls", cwd=project, env=prefect_env).stdout
        assert "retrain-on-drift" in automations  # the trigger the project's deployment created
        wait_model_ready(url, model_server, tmp_path / "model-server.log")

        tuneline(project, prefect_env, "demo-batch", str(tmp_path / "other-topics.csv"), "--rows", "400")
        traffic = pd.read_csv(tmp_path / "other-topics.csv")
        with httpx.Client(base_url=url, timeout=60) as client:
            for start_row in range(0, len(traffic), 8):
                rows = traffic.iloc[start_row:start_row + 8]
                answered = client.post("/predict", json={"inputs": list(rows["text"])}).json()
                assert answered["model_version"] == 1
                client.post("/feedback", json={"request_id": answered["request_id"],
                                               "labels": list(rows["sentiment"])}).raise_for_status()
        wait_for(lambda: len(list((project / "data/incoming").glob("traffic-*.parquet"))) == 2, 60,
                 "the traffic log to drop its batches")
        run = sh(sys.executable, "-m", "prefect", "deployment", "run", "monitoring/scheduled", "--watch",
                 "--watch-timeout", "400", cwd=project, env=prefect_env, check=False, timeout=450)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + (tmp_path / "serve.log").read_text()
        batches = sorted((project / "data/batches").glob("b000*"))
        assert len(batches) == 2 and len(list((project / "data/incoming/done").glob("traffic-*.parquet"))) == 2
        reports = [json.loads((project / "reports/monitoring" / b.name / "drift.json").read_text()) for b in batches]
        labelled = next(r for r in reports if r["batch"]["labelled"])
        assert labelled["decision"]["retrain"] and "text" in labelled["summary"]["drifted_columns"]
        assert labelled["batch"]["rows_accepted"] > 300  # the served rows with their true labels
        page = (project / "reports/monitoring" / batches[0].name / "drift.html").read_text()
        assert len(page) > 10_000 and page.index("Decision:") < page.index("root_metric")  # verdict first
        shown = flow_run_artifacts(prefect_env, created_flow_run_id(run.stdout))
        assert "labelled): RETRAIN" in shown["monitoring-decision"]

        # No one starts retraining: the drift event does, through the deployment's trigger.
        wait_for(lambda: len(registry_records(project)) == 2, 420, "the triggered retraining to gate v2")
        assert [b for b in load_params(project / "params.yaml").data.batches] == [labelled["batch"]["id"]]

        def retraining_runs() -> list[dict]:  # this project's (the session's server serves other tests too)
            runs = json.loads(sh(sys.executable, "-m", "prefect", "flow-run", "ls", "--flow-name", "retraining",
                                 "--output", "json", cwd=project, env=prefect_env).stdout)
            return [r for r in runs if (r.get("parameters") or {}).get("project_dir") == str(project.resolve())]

        # After the gate the run still pushes (when a DVC remote is set) and releases its slot: wait for its end.
        wait_for(lambda: [r["state_type"] for r in retraining_runs()] not in (["RUNNING"], ["PENDING"]), 120,
                 "the retraining run to finish")
        runs = retraining_runs()
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
        assert runs[0]["deployment_id"] is not None  # a run of the retraining/nightly deployment, not an ad-hoc one
        shown = flow_run_artifacts(prefect_env, runs[0]["id"])  # its own plan, and its training subflow's two
        assert set(shown) == {"retraining-plan", "training-metrics", "promotion-decision"}
        assert "# Candidate v2: PROMOTED" in shown["promotion-decision"]
        # The ingests (data/batches) and the promotion (models/registry) were versioned, and dvc.lock records the run.
        status = sh(sys.executable, "-m", "dvc", "status", "--json", cwd=project, env=prefect_env)
        assert status.stdout.strip() in ("{}", ""), status.stdout
        # The model server, never restarted, now answers with v2.
        wait_for(lambda: httpx.post(f"{url}/predict", json={"inputs": ["@united thanks"]}, timeout=30
                                    ).json()["model_version"] == 2, 30, "the running server to swap to v2", poll=0.5)
    finally:
        stop_process(model_server)
        serving.terminate(serve)


def separable_project(root: Path, tiny_model_dir: Path) -> Path:
    """One keyword per class: the tiny model learns it (macro-F1 1.0), so a broken retrain is clearly worse."""
    root.mkdir(parents=True)
    user_frame(40).to_csv(root.parent / "reviews.csv", index=False)
    params = tiny_params(tiny_model_dir, data={"path": str(root.parent / "reviews.csv"), "text_column": "review",
                                               "label_column": "stars", "include_pattern": None},
                         train={"epochs": 12, "learning_rate": 3e-3, "warmup_ratio": 0.0, "batch_size": 8,
                                "early_stopping_patience": 12},
                         preprocess={"max_length": 16})
    return make_project(root, params)


def test_a_worse_retrained_model_is_not_promoted_and_nothing_changes(prefect_env, tmp_path, tiny_model_dir):
    project = separable_project(tmp_path / "p", tiny_model_dir)
    first = tuneline(project, prefect_env, "run")
    assert "candidate v1 PROMOTED" in first.stdout
    assert "ingest: batch b0001-" in tuneline(project, prefect_env, "ingest", str(new_reviews(tmp_path / "new.csv"))).stdout
    # `monitor` with no arguments checks every stored batch without a drift verdict: the one `ingest` stored.
    checked = tuneline(project, prefect_env, "monitor", "--no-retrain")
    assert "batch b0001-" in checked.stdout and "-> decision:" in checked.stdout and "rejected" not in checked.stdout
    (report,) = (project / "reports/monitoring").glob("b0001-*/drift.html")
    assert "no new batch to process" in tuneline(project, prefect_env, "monitor", "--no-retrain").stdout  # once
    assert len(list((project / "data/batches").glob("b*"))) == 1  # nothing stored twice
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["learning_rate"] = 1e-12  # a broken retrain: the new head never learns
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    link_before = os.readlink(project / "models/production")
    production_before = tree_digest(project / "models/production")
    batches_before = tree_digest(project / "data/batches")

    retrain = tuneline(project, prefect_env, "retrain")
    assert "batch b0001-" in retrain.stdout and "joins the training pool" in retrain.stdout
    assert "candidate v2 REJECTED; production is v1" in retrain.stdout
    assert "holdout of batch b0001-" in retrain.stdout  # gated on the new batch's holdout too
    assert os.readlink(project / "models/production") == link_before
    assert tree_digest(project / "models/production") == production_before
    assert tree_digest(project / "data/batches") == batches_before
    assert [r["decision"]["promoted"] for r in registry_records(project)] == [True, False]

"""Real `dvc repro` in a temp git repo with a tiny model: caching, param-scoped reruns, a failing data gate."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import ALL, dvc, make_project, ran_stages, tiny_params, tool_env, tree_digest, tuneline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = make_project(tmp_path_factory.mktemp("dvcproj") / "p", tiny_params(tiny_model_dir))
    first = dvc(root, "repro")
    return root, first


def test_fresh_repro_runs_every_stage_then_nothing(project):
    root, first = project
    assert sorted(ran_stages(first.stdout)) == sorted(ALL) and ran_stages(first.stdout)[:4] == ALL[:4]
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["n_test"] == 120 and 0 <= metrics["model"]["macro_f1"] <= 1
    assert (root / "models/candidate/config.json").exists()
    second = dvc(root, "repro")
    assert ran_stages(second.stdout) == []
    assert "Data and pipelines are up to date" in second.stdout
    assert dvc(root, "status", "--json").stdout.strip() in ("{}", "")


def test_changing_a_train_param_reruns_only_what_reads_the_model(project):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["learning_rate"] = 5e-4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc(root, "repro")
    assert sorted(ran_stages(rerun.stdout)) == ["evaluate", "reference", "train"]
    assert "Stage 'preprocess' didn't change" in rerun.stdout


def test_each_state_change_by_hand_leaves_dvc_status_clean(project, tmp_path):
    """promote, rollback and ingest from the CLI version what they change (dvc add), as the flows do; pull:
    test_scale. The gate is opened wide so that the second candidate is promoted whatever it scores."""
    root, _ = project
    clean = lambda: dvc(root, "status", "--json").stdout.strip() in ("{}", "")  # noqa: E731
    assert "PROMOTED; production is v1" in tuneline(root, tool_env(), "promote").stdout and clean()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["seed"] = params["train"]["seed"] + 1
    params["promote"].update(min_delta=-1.0, max_class_drop=1.0, max_set_drop=1.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(root, "repro")
    assert "PROMOTED; production is v2" in tuneline(root, tool_env(), "promote").stdout and clean()
    assert "production: v2 -> v1" in tuneline(root, tool_env(), "rollback", "v1").stdout and clean()
    batch = tmp_path / "batch.csv"
    batch.write_text("text,sentiment\n" + "".join(f"new tweet {i},{('negative', 'positive')[i % 2]}\n"
                                                   for i in range(40)))
    assert "ingest: batch b0001-" in tuneline(root, tool_env(), "ingest", str(batch)).stdout and clean()


BAD_INPUTS = {
    # name: (file content, the stage that must stop it, message)
    "missing label column": ("text,mood\n" + "".join(f"tweet {i},{'ab'[i % 2]}\n" for i in range(50)), "validate",
                             "required column 'sentiment' (data.label_column) is missing"),
    "empty file": ("", "prepare", "file is empty (rule: empty file)"),
    "one class": ("text,sentiment\n" + "".join(f"tweet {i},negative\n" for i in range(50)), "validate",
                  "has a single class (negative)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_data_stops_the_pipeline_and_changes_nothing(project, tmp_path, case):
    content, stage, message = BAD_INPUTS[case]
    root, _ = project
    dvc(root, "repro")  # start from a clean, complete state
    # data/raw mirrors the configured source (prepare parsed it); the accepted data is data/validated.
    kept = ["data/validated", "data/processed", "models", "reports"] + (["data/raw"] if stage == "prepare" else [])
    before = {d: tree_digest(root / d) for d in kept}
    params_before = (root / "params.yaml").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    params = yaml.safe_load(params_before)
    params["data"].update(path=str(bad), include_pattern=None)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        failed = dvc(root, "repro", check=False)
        assert failed.returncode != 0
        output = failed.stdout + failed.stderr
        assert message in output and str(bad) in output
        assert ran_stages(failed.stdout)[-1] == stage  # nothing after the gate ran
        assert "Traceback" not in output
        assert {d: tree_digest(root / d) for d in before} == before  # accepted data, models, reports untouched
    finally:
        (root / "params.yaml").write_text(params_before)

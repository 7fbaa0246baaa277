"""Real `dvc repro` in a temp git repo with a tiny model: caching, param-scoped reruns, a failing data gate."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.conftest import dvc, make_project, ran_stages, tiny_params, tree_digest

pytestmark = pytest.mark.integration
ALL = ["prepare", "validate", "preprocess", "train", "evaluate"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = make_project(tmp_path_factory.mktemp("dvcproj") / "p", tiny_params(tiny_model_dir))
    first = dvc(root, "repro")
    return root, first


def test_fresh_repro_runs_every_stage_then_nothing(project):
    root, first = project
    assert ran_stages(first.stdout) == ALL
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["n_test"] == 120 and 0 <= metrics["model"]["macro_f1"] <= 1
    assert (root / "models/candidate/config.json").exists()
    second = dvc(root, "repro")
    assert ran_stages(second.stdout) == []
    assert "Data and pipelines are up to date" in second.stdout
    assert dvc(root, "status", "--json").stdout.strip() in ("{}", "")


def test_changing_a_train_param_reruns_only_train_and_evaluate(project):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["learning_rate"] = 5e-4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc(root, "repro")
    assert ran_stages(rerun.stdout) == ["train", "evaluate"]
    assert "Stage 'preprocess' didn't change" in rerun.stdout


def test_missing_label_column_fails_in_validate_and_touches_nothing_downstream(project, tmp_path):
    root, _ = project
    dvc(root, "repro")  # start from a clean, complete state
    model_before = tree_digest(root / "models/candidate")
    metrics_before = (root / "reports/metrics.json").read_bytes()
    bad = tmp_path / "no_labels.csv"
    pd.DataFrame({"text": [f"tweet {i}" for i in range(50)], "mood": ["a", "b"] * 25}).to_csv(bad, index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(path=str(bad), include_pattern=None)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    failed = dvc(root, "repro", check=False)
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "required column 'sentiment' (data.label_column) is missing" in output
    assert str(bad) in output
    assert ran_stages(failed.stdout) == ["prepare", "validate"]
    assert tree_digest(root / "models/candidate") == model_before
    assert (root / "reports/metrics.json").read_bytes() == metrics_before

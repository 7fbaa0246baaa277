"""Issue 15: `tuneline sweep` on DVC experiments, chosen by validation only, the winner gated like any candidate."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from tasks.orchestration import sweep
from tasks.config import ConfigError, SweepConfig, parse_params
from tests.conftest import dvc, make_project, sh, tiny_params

TRAIN_SUMMARY = "reports/train/metrics.json"
TEST_METRICS = "reports/metrics.json"


def experiments(project) -> dict[str, dict]:
    """name -> what DVC recorded for it (params and metrics files), read straight from `dvc exp show --json`."""
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    return {exp["revs"][0]["name"]: exp["revs"][0]["data"]
            for baseline in shown for exp in baseline.get("experiments") or []}


@pytest.mark.integration
def test_sweep_records_trials_as_dvc_experiments_and_gates_the_best_by_validation(prefect_env, tmp_path,
                                                                                  tiny_model_dir):
    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir, sweep={"jobs": 4}))
    dvc(project, "repro")  # the workspace's own run: its test metrics exist before the sweep
    test_metrics_before = json.loads((project / TEST_METRICS).read_text())

    run = sh(sys.executable, "-m", "tasks.cli", "sweep", "--project-dir", str(project),
             "--grid", "train.learning_rate=1e-12,3e-3", "--grid", "train.epochs=2", cwd=project, env=prefect_env)
    assert "# Sweep: 2 trials" in run.stdout and "**winner**" in run.stdout

    recorded = experiments(project)
    trials = {name: data for name, data in recorded.items() if name.startswith("sweep-")}
    assert len(trials) == 2, recorded.keys()
    val = {name: data["metrics"][TRAIN_SUMMARY]["data"]["best_val_score"] for name, data in trials.items()}
    tried = {name: (data["params"]["params.yaml"]["data"]["train"]["learning_rate"],
                    data["params"]["params.yaml"]["data"]["train"]["epochs"]) for name, data in trials.items()}
    assert sorted(tried.values()) == [(1e-12, 2), (3e-3, 2)]
    # Trials stop at `train`: evaluate never ran in them, so each carries the workspace's test metrics untouched.
    for data in trials.values():
        assert data["metrics"].get(TEST_METRICS, {}).get("data", test_metrics_before) == test_metrics_before

    report = json.loads((project / "reports/sweep.json").read_text())
    assert {t["name"]: t["val_score"] for t in report["trials"]} == val
    best = next(t["name"] for t in report["trials"] if val[t["name"]] == max(val.values()))  # ties: the earlier
    assert report["winner"]["name"] == best and val[best] > min(val.values())
    assert "the test split is not read" in report["chosen_by"]

    # The winner went through evaluate and the gate: params.yaml and the registry record carry its params.
    lr, epochs = tried[best]
    workspace = yaml.safe_load((project / "params.yaml").read_text())["train"]
    assert (workspace["learning_rate"], workspace["epochs"]) == (lr, epochs)
    assert "decision: candidate v1 PROMOTED" in run.stdout
    record = json.loads((project / "models/registry/versions/v0001/record.json").read_text())
    assert (record["params"]["train"]["learning_rate"], record["params"]["train"]["epochs"]) == (lr, epochs)
    assert json.loads((project / TEST_METRICS).read_text()) != test_metrics_before  # evaluated on the winner


def test_sweep_grid_rejects_keys_that_change_the_validation_rows_and_bad_values():
    base = parse_params({}).model_dump(by_alias=True)
    with pytest.raises(ConfigError, match=r"sweep.grid: preprocess.max_val_samples: cannot be swept"):
        sweep.check_grid({"preprocess.max_val_samples": [100]}, base)
    with pytest.raises(ConfigError, match=r"train.lerning_rate: unknown key"):
        sweep.check_grid({"train.lerning_rate": [1e-4]}, base)
    with pytest.raises(ConfigError, match=r"train.strategy"):
        sweep.check_grid({"train.strategy": ["full", "everything"]}, base)


def test_trials_are_the_grid_or_a_seeded_sample_and_the_choice_reads_validation_only():
    cfg = SweepConfig(grid={"train.learning_rate": [1e-5, 1e-4, 1e-3], "train.epochs": [1, 2]}, max_trials=4)
    plans = sweep.plan_trials(cfg)
    assert len(plans) == 4 and plans == sweep.plan_trials(cfg) and len({json.dumps(p) for p in plans}) == 4
    assert len(sweep.plan_trials(cfg.model_copy(update={"max_trials": 10}))) == 6
    trials = [sweep.Trial("a", {}, 0.7), sweep.Trial("b", {}, None), sweep.Trial("c", {}, 0.9),
              sweep.Trial("d", {}, 0.9)]
    assert sweep.choose(trials).name == "c"  # best validation score; the earlier trial on a tie
    with pytest.raises(sweep.SweepFailed, match="no trial of 1 finished"):
        sweep.choose([sweep.Trial("x", {})])

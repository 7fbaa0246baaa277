"""Issue 5: gate, registry with lineage, atomic promotion, rollback, batch prediction and HF-pipeline agreement."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tasks.registry import promotion as promote
from tasks.stages import evaluate, predict, prepare, preprocess, train, validate
from tasks.config import EvaluateConfig, Params, PreprocessConfig, TrainConfig, ValidateConfig
from tasks.registry.store import Registry, RegistryError
from tasks.files.tables import DataFileError
from tests.conftest import tool_env, tree_digest
from tests.test_stages import user_cfg, user_frame


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    """Processed data plus two trained candidates: one that learned the task, one that did not."""
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


def promote_run(project, name, registry, **promote_cfg):
    """Gate a candidate; these tests compare candidates with each other, so the baseline check is off by default."""
    root, params, processed, candidates = project
    params = params.model_copy(update={"promote": params.promote.model_copy(
        update={"min_over_baseline": None, **promote_cfg})})
    return promote.run(params, processed, candidates[name], root / f"metrics-{name}.json", registry, root)


def test_evaluate_reports_calibration_confusion_and_slices(project):
    root, *_ = project
    m = json.loads((root / "metrics-good.json").read_text())
    assert m["model"]["macro_f1"] > 0.9 and 0 <= m["model"]["expected_calibration_error"] <= 1
    matrix = m["confusion_matrix"]["rows_actual_cols_predicted"]
    assert sum(map(sum, matrix)) == m["n_test"] and len(matrix) == 4
    assert set(m["slices"]["topic"]) == {"a", "b"}
    assert (root / "plots-good/plots/sklearn/confusion_matrix.json").exists()
    assert (root / "plots-good/plots/custom/reliability.json").exists()


def test_gate_promotes_better_rejects_worse_and_rollback_restores_exact_files(project, tmp_path):
    reg = Registry.of_project(tmp_path)
    first = promote_run(project, "bad", reg)
    assert first.promoted and first.version == 1 and reg.production_version() == 1
    assert "no production model yet" in first.reasons[0]
    v1_files = tree_digest(reg.production)

    better = promote_run(project, "good", reg)
    assert better.promoted and better.version == 2 and reg.production_version() == 2
    assert reg.records()[-1]["parent"] == 1
    v2_files = tree_digest(reg.production)

    worse = promote_run(project, "bad", reg)
    assert not worse.promoted and reg.production_version() == 2
    assert any("< min_delta" in r for r in worse.reasons) and any("F1 drops" in r for r in worse.reasons)
    assert tree_digest(reg.production) == v2_files  # byte-identical after the rejection
    assert [(r["version"], r["decision"]["promoted"]) for r in reg.records()] == [(1, True), (2, True), (3, False)]

    reg.rollback(1)
    assert reg.production_version() == 1 and tree_digest(reg.production) == v1_files
    assert reg.events()[-1] == {**reg.events()[-1], "event": "rolled_back", "version": 1, "from_version": 2}
    with pytest.raises(RegistryError, match=r"version 3 cannot be restored; promoted versions: \[1, 2\]"):
        reg.rollback(3)


def test_first_candidate_that_loses_to_the_baseline_is_rejected(project, tmp_path):
    root = project[0]
    baseline = json.loads((root / "metrics-bad.json").read_text())["baseline_tfidf_logreg"]["macro_f1"]
    reg = Registry.of_project(tmp_path)
    first = promote_run(project, "bad", reg, min_over_baseline=0.0)
    assert not first.promoted and reg.production_version() is None and not (reg.production).exists()
    assert "the first candidate is not promoted" in first.reasons[0]
    assert f"loses to the baseline (TF-IDF + logistic regression) {baseline:.4f}" in first.reasons[1]
    assert "tuneline sweep" in first.reasons[1]
    record = reg.records()[-1]
    assert record["baseline"]["metrics"]["macro_f1"] == baseline and not record["decision"]["promoted"]

    better = promote_run(project, "good", reg, min_over_baseline=0.0)
    assert better.promoted and reg.production_version() == better.version == 2
    assert f"vs baseline (TF-IDF + logistic regression) {baseline:.4f}" in better.reasons[1]


def test_promoting_the_same_model_again_is_a_no_op(project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(project, "good", reg)
    events = reg.events_file.read_bytes()
    again = promote_run(project, "good", reg)
    assert again.unchanged and not again.promoted and again.production_version == 1
    assert "is production v1 already" in again.reasons[0]
    assert reg.events_file.read_bytes() == events and [r["version"] for r in reg.records()] == [1]


def test_registry_record_has_lineage_and_card(project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(project, "good", reg)
    record = json.loads((reg.version_dir(1) / "record.json").read_text())
    assert {"version", "created", "parent", "data", "code", "params", "metrics", "decision"} <= set(record)
    assert record["params"]["train"]["learning_rate"] == project[1].train.learning_rate
    card = (reg.production / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "text-classification" and "## Intended use" in card


def test_interrupted_promotion_leaves_production_on_the_old_version(project, tmp_path):
    root, params, processed, candidates = project
    reg = Registry.of_project(tmp_path)
    promote_run(project, "bad", reg)
    before = tree_digest(reg.production)
    # A crash mid-copy leaves a temp dir; a crash after the copy leaves a staged version nobody points at.
    (reg.versions_dir / ".v0002.tmp-999").mkdir()
    (reg.versions_dir / ".v0002.tmp-999" / "config.json").write_text("{half")
    record = {"version": 2, "decision": {"promoted": True}}
    reg.stage_version(candidates["good"], record, card="card")  # ... and the process dies before switching
    assert reg.production_version() == 1 and tree_digest(reg.production) == before
    assert [r["version"] for r in reg.records()] == [1]


def test_pipeline_agrees_with_tuneline_predict_on_every_row(project, tmp_path):
    from transformers import pipeline

    root, params, processed, candidates = project
    test = pd.read_parquet(processed / "test.parquet", columns=["text"])
    inp = tmp_path / "in.csv"
    test.assign(id=range(len(test))).to_csv(inp, index=False)
    proc = subprocess.run([sys.executable, "-m", "tasks.cli", "predict", str(inp), "-o", str(tmp_path / "out.jsonl"),
                           "--model", str(candidates["good"])], env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert list(out["id"]) == list(range(len(test)))  # input order and extra columns kept
    clf = pipeline("text-classification", model=str(candidates["good"]))
    assert [r["label"] for r in clf(test["text"].tolist())] == out["label"].tolist()
    probs = out.filter(like="prob_")
    assert probs.shape[1] == 4 and ((probs.sum(axis=1) - 1).abs() < 1e-4).all()


def test_predict_missing_column_and_empty_files(project, tmp_path):
    _, _, _, candidates = project
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"body": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(DataFileError, match=r"bad\.csv: text column 'text' is missing; columns present: body"):
        predict.run(bad, tmp_path / "o.csv", candidates["good"])
    other = tmp_path / "other.csv"  # predicting on `body` leaves the file's own `text` column as it was
    pd.DataFrame({"text": ["keep me", "and me"], "body": ["awful item 1 awful", "great item 2 great"]}).to_csv(
        other, index=False)
    predict.run(other, tmp_path / "other-out.csv", candidates["good"], column="body")
    out = pd.read_csv(tmp_path / "other-out.csv")
    assert out["text"].tolist() == ["keep me", "and me"] and out["label"].tolist() == ["one", "four"]
    for name, content in (("empty.csv", ""), ("header.csv", "text,id\n")):
        src = tmp_path / name
        src.write_text(content)
        result = predict.run(src, tmp_path / f"out-{name}", candidates["good"])
        out = pd.read_csv(tmp_path / f"out-{name}")
        assert result.rows == 0 and len(out) == 0 and "label" in out.columns


def test_cli_models_and_rollback(project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(project, "bad", reg)
    promote_run(project, "good", reg)
    args = ["--project-dir", str(tmp_path)]
    listed = subprocess.run([sys.executable, "-m", "tasks.cli", "models", *args], env=tool_env(COLUMNS="250"),
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "v1" in listed.stdout and "production" in listed.stdout
    rolled = subprocess.run([sys.executable, "-m", "tasks.cli", "rollback", "v1", *args], env=tool_env(),
                            capture_output=True, text=True)
    assert rolled.returncode == 0 and "production: v2 -> v1" in rolled.stdout
    missing = subprocess.run([sys.executable, "-m", "tasks.cli", "rollback", "9", *args], env=tool_env(),
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "version 9 cannot be restored" in missing.stderr


def test_gating_a_rejected_candidate_again_against_the_same_production_is_a_no_op(project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(project, "good", reg)
    assert not promote_run(project, "bad", reg).promoted  # v2 rejected
    events = reg.events_file.read_bytes()
    again = promote_run(project, "bad", reg)  # e.g. `make run` again after a rejected retrain
    assert again.unchanged and again.version == 2 and "rejected before as v2 against production v1" in again.reasons[0]
    assert reg.events_file.read_bytes() == events and [r["version"] for r in reg.records()] == [1, 2]


PROMOTE_IN_A_SUBPROCESS = """
import sys
from pathlib import Path
from tasks.registry import promotion as promote
from tasks.config import Params
from tasks.registry.store import Registry
params = Params.model_validate_json(Path(sys.argv[1]).read_text())
promote.run(params, Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Registry(Path(sys.argv[5]), Path(sys.argv[6])),
            sys.argv[7])
"""


@pytest.mark.parametrize("point, production_after", [("version-copied", 1), ("version-staged", 1),
                                                     ("production-switched", 2), ("event-half-written", 2)])
def test_a_promotion_killed_at_any_step_is_finished_or_undone(project, tmp_path, point, production_after):
    from tasks.engine.modeling import load_classifier

    root, params, processed, candidates = project
    reg = Registry.of_project(tmp_path)
    promote_run(project, "bad", reg)  # v1 in production
    (tmp_path / "params.json").write_text(params.model_dump_json(by_alias=True))
    killed = subprocess.run([sys.executable, "-c", PROMOTE_IN_A_SUBPROCESS, str(tmp_path / "params.json"),
                             str(processed), str(candidates["good"]), str(root / "metrics-good.json"),
                             str(reg.root), str(reg.production), str(root)],
                            env=tool_env(TUNELINE_FAILPOINT=point), capture_output=True, text=True, cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr  # SIGKILL at that step: no cleanup ran

    listed = subprocess.run([sys.executable, "-m", "tasks.cli", "models", "--project-dir", str(tmp_path)], env=tool_env(COLUMNS="250"), capture_output=True,
                            text=True, cwd=tmp_path)
    assert listed.returncode == 0 and "repaired: " in listed.stdout, listed.stdout + listed.stderr
    assert reg.production_version() == production_after
    versions = sorted(int(d.name[1:]) for d in reg.versions_dir.iterdir())
    assert versions == [r["version"] for r in reg.records()] == list(range(1, production_after + 1))
    assert not list(reg.versions_dir.glob(".*")) and reg.events_file.read_text().endswith("\n")
    assert load_classifier(reg.production).config.num_labels == 4  # production loads
    again = promote_run(project, "good", reg)  # the rerun: completes the promotion, or finds it done
    assert reg.production_version() == 2 and (again.promoted or again.unchanged)
    assert [r["version"] for r in reg.records()] == [1, 2]


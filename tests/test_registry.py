"""The gate and the model registry: promotion with lineage, no-op re-gating, rollback, and interrupted promotions."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tasks.registry import promotion as promote
from tasks.registry.store import Registry, RegistryError
from tests.conftest import tool_env, tree_digest


def promote_run(project, name, registry, **promote_cfg):
    """Gate a candidate; these tests compare candidates with each other, so the baseline check is off by default."""
    root, params, processed, candidates = project
    params = params.model_copy(update={"promote": params.promote.model_copy(
        update={"min_over_baseline": None, **promote_cfg})})
    return promote.run(params, processed, candidates[name], root / f"metrics-{name}.json", registry, root)


def test_gate_promotes_better_rejects_worse_and_rollback_restores_exact_files(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    first = promote_run(registry_project, "bad", reg)
    assert first.promoted and first.version == 1 and reg.production_version() == 1
    assert "no production model yet" in first.reasons[0]
    v1_files = tree_digest(reg.production)

    better = promote_run(registry_project, "good", reg)
    assert better.promoted and better.version == 2 and reg.production_version() == 2
    assert reg.records()[-1]["parent"] == 1
    v2_files = tree_digest(reg.production)

    worse = promote_run(registry_project, "bad", reg)
    assert not worse.promoted and reg.production_version() == 2
    assert any("< min_delta" in r for r in worse.reasons) and any("F1 drops" in r for r in worse.reasons)
    assert tree_digest(reg.production) == v2_files  # byte-identical after the rejection
    assert [(r["version"], r["decision"]["promoted"]) for r in reg.records()] == [(1, True), (2, True), (3, False)]

    reg.rollback(1)
    assert reg.production_version() == 1 and tree_digest(reg.production) == v1_files
    assert reg.events()[-1] == {**reg.events()[-1], "event": "rolled_back", "version": 1, "from_version": 2}
    with pytest.raises(RegistryError, match=r"version 3 cannot be restored; promoted versions: \[1, 2\]"):
        reg.rollback(3)


def test_first_candidate_that_loses_to_the_baseline_is_rejected(registry_project, tmp_path):
    root = registry_project[0]
    baseline = json.loads((root / "metrics-bad.json").read_text())["baseline_tfidf_logreg"]["macro_f1"]
    reg = Registry.of_project(tmp_path)
    first = promote_run(registry_project, "bad", reg, min_over_baseline=0.0)
    assert not first.promoted and reg.production_version() is None and not (reg.production).exists()
    assert "the first candidate is not promoted" in first.reasons[0]
    assert f"loses to the baseline (TF-IDF + logistic regression) {baseline:.4f}" in first.reasons[1]
    assert "tuneline sweep" in first.reasons[1]
    record = reg.records()[-1]
    assert record["baseline"]["metrics"]["macro_f1"] == baseline and not record["decision"]["promoted"]

    better = promote_run(registry_project, "good", reg, min_over_baseline=0.0)
    assert better.promoted and reg.production_version() == better.version == 2
    assert f"vs baseline (TF-IDF + logistic regression) {baseline:.4f}" in better.reasons[1]


def test_promoting_the_same_model_again_is_a_no_op(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "good", reg)
    events = reg.events_file.read_bytes()
    again = promote_run(registry_project, "good", reg)
    assert again.unchanged and not again.promoted and again.production_version == 1
    assert "is production v1 already" in again.reasons[0]
    assert reg.events_file.read_bytes() == events and [r["version"] for r in reg.records()] == [1]


def test_registry_record_has_lineage_and_card(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "good", reg)
    record = json.loads((reg.version_dir(1) / "record.json").read_text())
    assert {"version", "created", "parent", "data", "code", "params", "metrics", "decision"} <= set(record)
    assert record["params"]["train"]["learning_rate"] == registry_project[1].train.learning_rate
    card = (reg.production / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "text-classification" and "## Intended use" in card


def test_interrupted_promotion_leaves_production_on_the_old_version(registry_project, tmp_path):
    root, params, processed, candidates = registry_project
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "bad", reg)
    before = tree_digest(reg.production)
    # A crash mid-copy leaves a temp dir; a crash after the copy leaves a staged version nobody points at.
    (reg.versions_dir / ".v0002.tmp-999").mkdir()
    (reg.versions_dir / ".v0002.tmp-999" / "config.json").write_text("{half")
    record = {"version": 2, "decision": {"promoted": True}}
    reg.stage_version(candidates["good"], record, card="card")  # ... and the process dies before switching
    assert reg.production_version() == 1 and tree_digest(reg.production) == before
    assert [r["version"] for r in reg.records()] == [1]


def test_cli_models_and_rollback(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "bad", reg)
    promote_run(registry_project, "good", reg)
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


def test_gating_a_rejected_candidate_again_against_the_same_production_is_a_no_op(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "good", reg)
    assert not promote_run(registry_project, "bad", reg).promoted  # v2 rejected
    events = reg.events_file.read_bytes()
    again = promote_run(registry_project, "bad", reg)  # e.g. `make run` again after a rejected retrain
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
def test_a_promotion_killed_at_any_step_is_finished_or_undone(registry_project, tmp_path, point, production_after):
    from tasks.engine.modeling import load_classifier

    root, params, processed, candidates = registry_project
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "bad", reg)  # v1 in production
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
    again = promote_run(registry_project, "good", reg)  # the rerun: completes the promotion, or finds it done
    assert reg.production_version() == 2 and (again.promoted or again.unchanged)
    assert [r["version"] for r in reg.records()] == [1, 2]


# --- integrity: a registry never loses a version, and never serves weights it did not promote ------------------------

def test_a_lost_event_log_moves_unknown_versions_aside_and_deletes_none(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "bad", reg)
    promote_run(registry_project, "good", reg)
    v1_files = tree_digest(reg.version_dir(1))
    reg.events_file.unlink()  # lost (a disk error, a bad merge): the log no longer names v1 or v2
    done = reg.repair()
    orphans = sorted(reg.orphans_dir.iterdir())
    assert [d.name[:5] for d in orphans] == ["v0001"] and tree_digest(orphans[0]) == v1_files  # kept, byte for byte
    assert any("moved v1" in line and "nothing was deleted" in line for line in done)
    assert reg.production_version() == 2 and (reg.version_dir(2) / "config.json").exists()  # production re-recorded


def test_a_repair_killed_while_rewriting_the_log_leaves_it_whole(registry_project, tmp_path):
    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "bad", reg)
    whole = reg.events_file.read_text()
    reg.events_file.write_text(whole + '{"event": "promo')  # a half-written last line, as a kill mid-append leaves
    killed = subprocess.run([sys.executable, "-c", "import sys; from tasks.registry.store import Registry; "
                             "Registry.of_project(sys.argv[1]).repair()", str(tmp_path)],
                            env=tool_env(TUNELINE_FAILPOINT="before-replace:events.jsonl"), capture_output=True)
    assert killed.returncode == -9  # killed after writing the new log aside, before the rename
    assert reg.events_file.read_text() == whole + '{"event": "promo'  # the old log, whole: nothing lost
    assert reg.repair() == ["dropped a half-written last event"] and reg.events_file.read_text() == whole


def test_tampered_weights_are_refused_by_predict_and_rollback_naming_version_and_file(registry_project, tmp_path):
    from tasks.files.weights import WeightsMismatch
    from tasks.stages import predict

    reg = Registry.of_project(tmp_path)
    promote_run(registry_project, "bad", reg)
    promote_run(registry_project, "good", reg)
    weights = reg.version_dir(1) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in v1's weights
    weights.write_bytes(bytes(data))
    before = tree_digest(reg.production)
    with pytest.raises(WeightsMismatch, match=r"v1: .*v0001/model\.safetensors does not match the sha256"):
        reg.rollback(1)
    assert reg.production_version() == 2 and tree_digest(reg.production) == before
    (tmp_path / "in.csv").write_text("text\nhello there\n")
    with pytest.raises(WeightsMismatch, match=r"v1: .*model\.safetensors does not match"):
        predict.run(tmp_path / "in.csv", tmp_path / "out.csv", reg.version_dir(1))
    assert not (tmp_path / "out.csv").exists()
    assert predict.run(tmp_path / "in.csv", tmp_path / "out.csv", reg.production).rows == 1  # v2 is intact


def test_cli_repairs_under_the_lock_of_the_project_that_owns_the_registry(registry_project, tmp_path):
    from tasks.orchestration.locking import project_lock

    reg = Registry.of_project(tmp_path / "owner")
    promote_run(registry_project, "bad", reg)
    (reg.versions_dir / "v0009").mkdir()  # something for a repair to do
    with project_lock(tmp_path / "owner", 0, "a test holding the owner's lock"):
        listed = subprocess.run([sys.executable, "-m", "tasks.cli", "models", "--project-dir", str(tmp_path / "owner")],
                                env=tool_env(COLUMNS="250"), capture_output=True, text=True, cwd=tmp_path)
    assert "(a run holds the project: listed as it is now)" in listed.stdout and (reg.versions_dir / "v0009").exists()
    bad = subprocess.run([sys.executable, "-m", "tasks.cli", "rollback", "abc", "--project-dir", str(tmp_path / "owner")],
                         env=tool_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'abc' is not a version: give a number such as 2 or v2" in bad.stderr

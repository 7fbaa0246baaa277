"""params.yaml is read once into a typed config: unknown keys and wrong types fail before any work, naming the key."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tasks.config import ConfigError, TrainConfig, load_params, parse_params
from tasks.params_file import apply_overrides
from tests.conftest import REPO, tool_env


def test_shipped_params_file_is_valid():
    cfg = load_params(REPO / "params.yaml")
    assert cfg.train.model == "default" and cfg.data.path is None


@pytest.mark.parametrize("raw, key", [
    ({"train": {"epochz": 3}}, "train.epochz"),
    ({"trian": {"epochs": 3}}, "trian"),
    ({"data": {"path": None, "text_col": "t"}}, "data.text_col"),
])
def test_unknown_key_is_named(raw, key):
    with pytest.raises(ConfigError) as exc:
        parse_params(raw, source="p.yaml")
    assert f"p.yaml: {key}: unknown key" in str(exc.value)


@pytest.mark.parametrize("raw, key", [
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"preprocess": {"test_size": 1.5}}, "preprocess.test_size"),
    ({"train": {"device": "tpu"}}, "train.device"),
])
def test_wrong_type_is_named(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_stage_command_fails_before_any_work(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["learning_rat"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "raw.parquet"
    proc = subprocess.run([sys.executable, "-m", "tasks.cli", "stage", "prepare", "--output", str(out)],
                          cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.learning_rat: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_override_leaves_params_untouched(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        apply_overrides(path, {"train.epochs": "three"})
    assert path.read_bytes() == before
    apply_overrides(path, {"train.epochs": 1})
    assert load_params(path).train.epochs == 1
    assert "# tuneline parameters" in path.read_text()  # comments survive the rewrite


def test_kind_is_a_validated_param():
    from tasks.config import ConfigError, parse_params

    assert parse_params({"task": {"kind": "token-classification"}}).task.kind == "token-classification"
    with pytest.raises(ConfigError, match=r"task\.kind"):
        parse_params({"task": {"kind": "speech"}})
    json.dumps(parse_params({}).model_dump(by_alias=True))


def test_batch_size_must_be_auto_or_a_positive_integer():
    from pydantic import ValidationError

    assert TrainConfig().batch_size == "auto" and TrainConfig(batch_size=64).batch_size == 64
    for bad in ("big", 0):
        with pytest.raises(ValidationError, match="batch_size"):
            TrainConfig(batch_size=bad)


def test_a_params_rewrite_killed_before_its_rename_leaves_params_whole(tmp_path):
    """`-S` overrides and retraining plans rewrite params.yaml: aside, flushed, renamed. A kill at the worst moment
    (the new text written, not yet renamed) leaves the old file, whole and valid."""
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    before = path.read_bytes()
    killed = subprocess.run([sys.executable, "-c", "import sys; from tasks.params_file import apply_overrides; "
                             "apply_overrides(sys.argv[1], {'train.epochs': 7})", str(path)],
                            env=tool_env(TUNELINE_FAILPOINT="before-replace:params.yaml"), capture_output=True)
    assert killed.returncode == -9 and path.read_bytes() == before and load_params(path).train.epochs == "auto"


def test_api_override_keys_can_never_include_the_gate_or_validation():
    assert parse_params({}).control.override_keys[:2] == ["train.epochs", "train.max_epochs"]
    for key in ("promote.min_delta", "validate.max_quarantine_share", "control.override_keys"):
        with pytest.raises(ConfigError, match=rf"{key}: the gate's, validation's and these keys cannot be set"):
            parse_params({"control": {"override_keys": ["train.epochs", key]}})
    with pytest.raises(ConfigError, match=r"control\.override_keys: train\.epochz: no such params key"):
        parse_params({"control": {"override_keys": ["train.epochz"]}})

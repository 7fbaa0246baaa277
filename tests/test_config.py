"""params.yaml is read once into a typed config: unknown keys and wrong types fail before any work, naming the key."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tasks.config import ConfigError, load_params, parse_params
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

"""Evaluate and batch prediction: calibration, confusion and slices; `tuneline predict` agrees with the HF pipeline."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tasks.files.tables import DataFileError
from tasks.stages import predict
from tests.conftest import tool_env


def test_evaluate_reports_calibration_confusion_and_slices(registry_project):
    root, *_ = registry_project
    m = json.loads((root / "metrics-good.json").read_text())
    assert m["model"]["macro_f1"] > 0.9 and 0 <= m["model"]["expected_calibration_error"] <= 1
    matrix = m["confusion_matrix"]["rows_actual_cols_predicted"]
    assert sum(map(sum, matrix)) == m["n_test"] and len(matrix) == 4
    assert set(m["slices"]["topic"]) == {"a", "b"}
    assert (root / "plots-good/plots/sklearn/confusion_matrix.json").exists()
    assert (root / "plots-good/plots/custom/reliability.json").exists()


def test_pipeline_agrees_with_tuneline_predict_on_every_row(registry_project, tmp_path):
    from transformers import pipeline

    root, params, processed, candidates = registry_project
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


def test_predict_missing_column_and_empty_files(registry_project, tmp_path):
    _, _, _, candidates = registry_project
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

"""Text regression (`task.kind: text-regression`): numeric targets checked row by row, MSE/Huber training through the
real stages, RMSE/MAE/R²/Spearman beside TF-IDF + ridge, a score that `transformers.pipeline` returns as it is, and
a gate and a monitor that know a lower RMSE is the better one."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.checks import check
from tasks.config import DataConfig, MonitorConfig, PromoteConfig, TrainConfig, ValidateConfig, parse_params
from tasks.kinds import get_kind
from tasks.monitoring import drift
from tasks.monitoring.decision import decide as monitor_decide
from tasks.registry.gate import decide as gate_decide
from tasks.stages import evaluate, predict, prepare, preprocess, train, validate

REGRESSION = get_kind("text-regression")
STARS = {"awful": 1.0, "poor": 2.0, "fine": 3.5, "great": 5.0}


def ratings(n_per_word: int = 30) -> pd.DataFrame:
    rows = [{"review": f"{word} item number {i} {word}", "stars": stars + (i % 3) * 0.1}
            for word, stars in STARS.items() for i in range(n_per_word)]
    return pd.DataFrame(rows)


def data_cfg(path) -> DataConfig:
    return DataConfig(path=str(path), text_column="review", label_column="stars", include_pattern=None)


def test_non_numeric_and_non_finite_targets_are_quarantined_with_row_column_and_rule(tmp_path):
    rows = ratings(3)
    rows["stars"] = rows["stars"].astype(object)
    rows.loc[1, "stars"], rows.loc[2, "stars"], rows.loc[3, "stars"] = "four", "inf", "NaN"
    rows.loc[4, "stars"], rows.loc[5, "stars"] = None, " 2.5 "
    src = tmp_path / "ratings.csv"
    rows.to_csv(src, index=False)
    prepared = prepare.run(data_cfg(src), tmp_path / "raw.parquet", kind=REGRESSION).output
    outcome = check(pd.read_parquet(prepared), data_cfg(src), ValidateConfig(min_rows=2, min_rows_per_class=1),
                    str(src), kind=REGRESSION)
    q = outcome.quarantine.set_index("row")
    # Row numbers are the file's data rows (1-based): pandas row 1 is row 2.
    assert q.loc[2, "rule"] == "non_numeric_target" and q.loc[2, "detail"] == "'four' in column 'stars' is not a number"
    assert q.loc[3, "rule"] == "non_finite_target" and "'inf' in column 'stars' is not a finite number" in q.loc[3, "detail"]
    assert q.loc[4, "rule"] == "non_finite_target"
    assert q.loc[5, "rule"] == "blank_label" and "'stars'" in q.loc[5, "detail"]
    assert len(q) == 4 and outcome.accepted["label"].dtype == float
    assert 2.5 in set(outcome.accepted["label"])  # " 2.5 " is a number


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_model_dir):
    """The tiny BERT trained on the ratings through the stage functions dvc runs, and evaluated."""
    work = tmp_path_factory.mktemp("regression")
    src = work / "ratings.csv"
    ratings().to_csv(src, index=False)
    params = parse_params({"task": {"kind": "text-regression"}, "data": data_cfg(src).model_dump(),
                           "preprocess": {"max_length": 16},
                           "train": {"model": str(tiny_model_dir), "epochs": 5, "batch_size": 8,
                                     "learning_rate": 1e-2, "num_threads": 1, "checkpoint_every_steps": None}})
    prepare.run(params.data, work / "raw.parquet", kind=REGRESSION)
    validate.run(params.data, params.validate_, work / "raw.parquet", work / "ok.parquet", work / "q.csv",
                 work / "v.json", source=str(src), kind=REGRESSION)
    processed = preprocess.run(params.preprocess, str(tiny_model_dir), work / "ok.parquet", work / "processed",
                               kind=REGRESSION).output_dir
    result = train.run(params.train, processed, work / "model", work / "train", kind=REGRESSION)
    metrics = evaluate.run(params.evaluate, processed, work / "model", work / "metrics.json", work / "plots",
                           base_model=str(tiny_model_dir), kind=REGRESSION, precision="fp32")
    return work, processed, result, metrics


def test_regression_trains_with_mse_and_reports_rmse_mae_r2_spearman_beside_ridge(regression_run, capsys):
    work, processed, result, metrics = regression_run
    assert json.loads((processed / "labels.json").read_text()) == ["score"]
    assert result.val_metric == "rmse" and not result.val_higher_is_better
    assert result.best_val_score == min(h["val_rmse"] for h in result.history)  # early stopping followed RMSE down
    model, base = metrics["model"], metrics["baseline_tfidf_ridge"]
    assert set(model) >= {"rmse", "mae", "r2", "spearman"} and "per_class" not in model
    assert metrics["headline"] == "rmse" and metrics["rmse_gain_over_baseline"] == pytest.approx(
        base["rmse"] - model["rmse"])
    assert model["rmse"] < 1.2  # the stars spread 1-5: a model that learned nothing sits near their std (1.5)
    assert set(metrics["residuals"]) == {"mean", "std", "p05", "p95"}
    assert (work / "plots" / "plots" / "custom" / "predicted_vs_actual.json").exists()


def test_predict_writes_a_score_that_the_pipeline_returns_as_it_is(regression_run, tmp_path):
    from transformers import pipeline

    work, *_ = regression_run
    assert json.loads((work / "model" / "config.json").read_text())["problem_type"] == "regression"
    texts = ["awful item", "great item", "a fine one"]
    pd.DataFrame({"review": texts}).to_csv(tmp_path / "in.csv", index=False)
    predict.run(tmp_path / "in.csv", tmp_path / "out.csv", work / "model", column="review", precision="fp32")
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["review", "score"]
    theirs = [r["score"] for r in pipeline("text-classification", model=str(work / "model"))(texts)]
    np.testing.assert_allclose(out["score"], theirs, atol=1e-5)
    assert out["score"][0] < out["score"][1]  # awful below great


def test_huber_loss_trains_too(regression_run, tiny_model_dir, tmp_path, capsys):
    _, processed, _, _ = regression_run
    cfg = TrainConfig(model=str(tiny_model_dir), loss="huber", epochs=1, batch_size=8, learning_rate=2e-3,
                      num_threads=1)
    result = train.run(cfg, processed, tmp_path / "m", tmp_path / "t", kind=REGRESSION)
    assert "loss huber" in capsys.readouterr().out and np.isfinite(result.history[0]["train_loss"])


def test_the_gate_knows_a_lower_rmse_is_better():
    cfg = PromoteConfig(min_delta=0.0, min_over_baseline=0.0)
    production = {"rmse": 0.50}
    better = gate_decide({"rmse": 0.40}, production, cfg, baseline=("ridge", {"rmse": 0.45}), metric="rmse")
    assert better.promote and "gain +0.1000 >= min_delta 0.0; lower is better" in " ".join(better.reasons)
    worse = gate_decide({"rmse": 0.60}, production, cfg, baseline=("ridge", {"rmse": 0.45}), metric="rmse")
    assert not worse.promote and any("loses to the baseline (ridge)" in r for r in worse.reasons)
    first = gate_decide({"rmse": 0.40}, None, cfg, baseline=("ridge", {"rmse": 0.45}), metric="rmse")
    assert first.promote


def test_monitoring_retrains_when_the_live_rmse_rises():
    summary = drift.DriftSummary(100, 100, [], {"rmse": 0.70, "mae": 0.5, "rows": 100})
    cfg = MonitorConfig(max_error_rise=0.05)
    decision = monitor_decide(summary, cfg, 0.50, pending_labelled_rows=100, metric="rmse")
    assert decision.retrain
    assert "live RMSE 0.7000 vs production test 0.5000 (rise +0.2000 >= monitor.max_error_rise 0.05)" in \
        decision.reasons[1]
    steady = drift.DriftSummary(100, 100, [], {"rmse": 0.51, "rows": 100})
    assert not monitor_decide(steady, cfg, 0.50, pending_labelled_rows=100, metric="rmse").retrain


def test_drift_checks_the_distribution_of_predicted_scores():
    rng = np.random.default_rng(0)

    def profile(shift: float) -> pd.DataFrame:
        n = 300
        frame = pd.DataFrame({"text_length": rng.normal(60, 10, n), "predicted_label": rng.normal(shift, 0.3, n)})
        for i in range(4):
            frame[f"emb_{i}"] = rng.normal(0, 1, n)
        return frame

    summary = drift.check(profile(0.0), profile(1.0))
    scored = {c.column: c for c in summary.columns}
    assert scored["predicted_label"].kind == "prediction" and scored["predicted_label"].drifted
    assert "confidence" not in scored and not scored["text_length"].drifted

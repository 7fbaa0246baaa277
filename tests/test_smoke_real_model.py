"""One smoke run of the real packaged all-MiniLM-L6-v2 on a few hundred embedded tweets, through every stage."""
from __future__ import annotations

import json

import pytest

from tasks.stages import evaluate, prepare, preprocess, train, validate
from tasks.config import Params

pytestmark = pytest.mark.smoke


def test_packaged_minilm_fine_tunes_and_loads_with_plain_transformers(tmp_path):
    from transformers import pipeline

    cfg = Params()
    cfg.preprocess = cfg.preprocess.model_copy(update=dict(max_train_samples=240, max_val_samples=60,
                                                           max_test_samples=120, max_length=48))
    cfg.train = cfg.train.model_copy(update=dict(epochs=1, batch_size=16))
    raw = prepare.run(cfg.data, tmp_path / "raw.parquet").output
    validate.run(cfg.data, cfg.validate_, raw, tmp_path / "ok.parquet", tmp_path / "quarantine.csv",
                 tmp_path / "validation.json", "embedded")
    processed = preprocess.run(cfg.preprocess, cfg.train.model, tmp_path / "ok.parquet", tmp_path / "processed")
    assert processed.labels == ["negative", "neutral", "positive"]
    result = train.run(cfg.train, processed.output_dir, tmp_path / "model", tmp_path / "train-metrics")
    assert result.samples_per_s > 0 and result.best_val_score > 0
    metrics = evaluate.run(cfg.evaluate, processed.output_dir, tmp_path / "model", tmp_path / "metrics.json")
    assert metrics["n_test"] == 120
    assert json.loads((tmp_path / "metrics.json").read_text())["model"]["macro_f1"] == metrics["model"]["macro_f1"]

    # Fine-tuning moved the packaged encoder's weights (quality at real budgets is `make run`'s job).
    from safetensors.torch import load_file
    from tasks.kinds import resolve_model

    base = load_file(f"{resolve_model('default', 'text-classification')}/model.safetensors")
    tuned = load_file(str(tmp_path / "model" / "model.safetensors"))
    key = "encoder.layer.5.attention.self.query.weight"
    base_key = key if key in base else f"bert.{key}"
    assert not (tuned[f"bert.{key}"] == base[base_key]).all()

    # The saved directory is a plain HF model: transformers' pipeline loads it and uses our label names.
    clf = pipeline("text-classification", model=str(tmp_path / "model"))
    assert clf("@united lost my bag again, worst airline ever")[0]["label"] in processed.labels

    # The reference profile for drift monitoring: the fine-tuned model's predictions and its own embeddings.
    from tasks.monitoring import profile

    from tasks.stages import reference

    ref = reference.run(processed.output_dir, tmp_path / "model", tmp_path / "ref.parquet", rows=100, seed=0)
    assert len(ref) == 100 and len(profile.embedding_columns(ref)) == 384  # MiniLM's hidden size
    assert set(ref[profile.PRED]) <= set(processed.labels) and ref[profile.CONFIDENCE].between(0, 1).all()

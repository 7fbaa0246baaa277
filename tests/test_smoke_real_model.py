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


def test_packaged_smollm2_loads_takes_a_step_and_answers(tmp_path):
    """The embedded SmolLM2-135M-Instruct: converted from its GGUF (cached by sha256), one LoRA step on 8 of the
    default chats, one greedy answer through the saved model."""
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.config import parse_params
    from tasks.inference import Predictor
    from tasks.kinds import chat, get_kind
    from tasks.kinds.generation_default import SYSTEM, default_generation_model, source_sha256

    path = default_generation_model()
    assert path.name.endswith(source_sha256()[:12]) and (path / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)

    kind = get_kind("text-generation")
    params = parse_params({"task": {"kind": "text-generation"}, "train": {"strategy": "auto", "max_epochs": "auto"},
                           "preprocess": {"max_length": "auto"}})
    rows = kind.read_source(params.data).head(8)
    processor = kind.load_processor(str(path))
    table, _ = kind.encode(rows, processor, params.preprocess, [])
    processed = tmp_path / "processed"
    processed.mkdir()
    for name in ("train", "val"):
        table.assign(augmented=False).to_parquet(processed / f"{name}.parquet")
    (processed / "labels.json").write_text("[]")
    config = params.train.model_copy(update={"epochs": 1, "max_epochs": None, "batch_size": 8})
    result = train.run(config, processed, tmp_path / "model", tmp_path / "metrics", kind=kind,
                       generation=params.generate.model_copy(update={"max_new_tokens": 16}))
    assert result.epochs_run == 1 and result.history[0]["val_loss"] > 0
    answer = Predictor(tmp_path / "model", precision="fp32").answer(pd.DataFrame({"messages": [chat.dumps(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Taylor Swift played in London"}])]}))
    assert answer[0]["generated_text"] and answer[0]["finish_reason"] in ("stop", "length")

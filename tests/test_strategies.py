"""Fine-tuning strategies: head-only keeps the base bit-identical, gradual unfreezes, layer-wise rates, LoRA."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tasks.config import TrainConfig, parse_params
from tasks.engine.modeling import load_classifier, load_model, save_classifier
from tasks.engine.strategies import build_param_groups, frozen_groups, named_groups
from tasks.inference import Predictor
from tasks.stages import train
from tests.conftest import IMAGE, TOKEN, splits


def body_keys(state: dict) -> dict:
    """Embeddings and encoder-layer weights (the pretrained base), keyed without the `bert.` prefix."""
    return {k.removeprefix("bert."): v for k, v in state.items()
            if ".embeddings." in f".{k}" or ".encoder.layer." in f".{k}"}


def test_head_strategy_leaves_every_base_parameter_bit_identical(tmp_path, tiny_model_dir, processed):
    cfg = TrainConfig(model=str(tiny_model_dir), strategy="head", epochs=2, learning_rate=1e-2, num_threads=1,
                      batch_size=8, warmup_ratio=0.0)
    result = train.run(cfg, processed.output_dir, tmp_path / "model", tmp_path / "metrics")
    assert [h["trainable"] for h in result.history] == [["head"], ["head"]]
    before = body_keys(load_file(tiny_model_dir / "model.safetensors"))
    after = body_keys(load_file(tmp_path / "model" / "model.safetensors"))
    assert before.keys() == after.keys() and len(before) > 10
    assert all(torch.equal(before[k], after[k]) for k in before)
    head_before = load_file(tiny_model_dir / "model.safetensors")["pooler.dense.weight"]
    assert not torch.equal(head_before, load_file(tmp_path / "model" / "model.safetensors")["bert.pooler.dense.weight"])


def test_gradual_unfreezes_top_down_as_the_optimizer_sees_it(tmp_path, tiny_model_dir, processed):
    cfg = TrainConfig(model=str(tiny_model_dir), strategy="gradual", epochs=4, learning_rate=1e-3, num_threads=1,
                      batch_size=8, early_stopping_patience=4)
    result = train.run(cfg, processed.output_dir, tmp_path / "model", tmp_path / "metrics")
    assert [h["trainable"] for h in result.history] == [
        ["head"], ["head", "layer.1"], ["head", "layer.1", "layer.0"], ["head", "layer.1", "layer.0", "embeddings"]]


def test_unfreeze_schedule_with_several_groups_per_epoch():
    names = ["head", "layer.3", "layer.2", "layer.1", "layer.0", "embeddings"]
    assert frozen_groups("gradual", 1, names, 2) == names[1:]
    assert frozen_groups("gradual", 2, names, 2) == ["layer.1", "layer.0", "embeddings"]
    assert frozen_groups("gradual", 4, names, 2) == []
    assert frozen_groups("full", 1, names) == [] and frozen_groups("head", 3, names) == names[1:]


def test_layer_lr_decay_gives_each_layer_the_rate_above_times_decay(tiny_model_dir):
    model = load_model(str(tiny_model_dir), ["a", "b"])
    groups = build_param_groups(named_groups(model), lr=1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    rates = {}
    for g in groups:
        rates.setdefault(g["name"], set()).add(g["lr"])
    assert rates == {"head": {1e-3}, "layer.1": {5e-4}, "layer.0": {2.5e-4}, "embeddings": {1.25e-4}}
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim == 1 for p in g["params"]))
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(model.parameters()))  # every parameter in exactly one group
    assert [n for n, _ in named_groups(model)] == ["head", "layer.1", "layer.0", "embeddings"]


def test_cnn_stages_are_the_layer_groups_for_head_gradual_and_layer_wise_rates(tiny_resnet_dir):
    from tasks.config import TrainConfig
    from tasks.engine.strategies import build_param_groups, frozen_groups, named_groups
    from tasks.stages.train import build_model

    model, _ = build_model(TrainConfig(model=str(tiny_resnet_dir)), ["a", "b"], IMAGE)
    names = [name for name, _ in named_groups(model)]
    assert names == ["head", "layer.1", "layer.0", "embeddings"]  # classifier, ResNet stages top-down, stem
    assert frozen_groups("gradual", 2, names) == ["layer.0", "embeddings"]
    rates = {g["name"]: g["lr"] for g in build_param_groups(named_groups(model), 1e-3, 0.0, layer_lr_decay=0.5)}
    assert rates == pytest.approx({"head": 1e-3, "layer.1": 5e-4, "layer.0": 2.5e-4, "embeddings": 1.25e-4})


def test_dropout_override_reaches_the_model(tiny_model_dir):
    model = load_model(str(tiny_model_dir), ["a", "b"], dropout=0.3)
    assert model.config.hidden_dropout_prob == 0.3 and model.config.attention_probs_dropout_prob == 0.3


@pytest.mark.parametrize("strategy", ["full", "head", "gradual", "lora"])
def test_strategy_is_a_params_switch(strategy):
    assert parse_params({"train": {"strategy": strategy}}).train.strategy == strategy


# --- LoRA ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("save", ["merged", "adapter"])
def test_lora_trains_only_adapters_and_head_and_the_saved_model_predicts_the_same(
        tmp_path, tiny_model_dir, processed, save):
    cfg = TrainConfig(model=str(tiny_model_dir), strategy="lora", epochs=2, learning_rate=5e-3, num_threads=1,
                      batch_size=8, lora={"r": 4, "alpha": 8, "save": save})
    labels = json.loads((processed.output_dir / "labels.json").read_text())
    model, tokenizer = train.build_model(cfg, labels)
    trn, val, _ = splits(processed.output_dir, tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, result = train.fit(model, trn, val, cfg)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n or "classifier" in n for n in changed), sorted(changed)
    assert any("lora_" in n for n in changed)
    assert result.trainable_params < sum(p.numel() for p in before.values()) / 10

    save_classifier(model, tokenizer, tmp_path / "model", str(tiny_model_dir), merge_lora=save == "merged")
    adapter_files = (tmp_path / "model" / "adapter_config.json").exists()
    assert adapter_files == (save == "adapter")
    model.eval()
    texts = pd_texts(processed.output_dir)
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        expected = torch.softmax(model(**enc).logits, -1).numpy()
    reloaded = Predictor(tmp_path / "model", max_length=16, precision="fp32").probabilities(texts)
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)
    assert load_classifier(tmp_path / "model").config.id2label == model.config.id2label


def pd_texts(processed_dir) -> list[str]:
    import pandas as pd

    return pd.read_parquet(processed_dir / "test.parquet")["text"].tolist()


def test_token_lora_adapts_the_encoder_and_trains_the_tag_head(tmp_path, tiny_model_dir):
    import torch

    from tasks.config import TrainConfig
    from tasks.stages.train import build_model

    cfg = TrainConfig(model=str(tiny_model_dir), strategy="lora", lora={"r": 4, "alpha": 8})
    model, _ = build_model(cfg, ["B-PER", "I-PER", "O"], TOKEN)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert all("lora_" in n or "classifier" in n for n in trainable)
    assert isinstance(model(input_ids=torch.tensor([[2, 50, 3]])).logits, torch.Tensor)

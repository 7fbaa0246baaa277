"""Issue 4 (strategies): head-only keeps the base bit-identical, gradual unfreezes top-down, layer-wise rates."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tasks.stages import train
from tasks.engine.modeling import load_model
from tasks.config import TrainConfig, parse_params
from tasks.engine.strategies import build_param_groups, frozen_groups, named_groups
from tests.test_stages import processed  # noqa: F401  (fixture: a tokenized 4-class dataset on the tiny model)


def body_keys(state: dict) -> dict:
    """Embeddings and encoder-layer weights (the pretrained base), keyed without the `bert.` prefix."""
    return {k.removeprefix("bert."): v for k, v in state.items()
            if ".embeddings." in f".{k}" or ".encoder.layer." in f".{k}"}


def test_head_strategy_leaves_every_base_parameter_bit_identical(tmp_path, tiny_model_dir, processed):  # noqa: F811
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


def test_gradual_unfreezes_top_down_as_the_optimizer_sees_it(tmp_path, tiny_model_dir, processed):  # noqa: F811
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
    groups = build_param_groups(model, lr=1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    rates = {}
    for g in groups:
        rates.setdefault(g["name"], set()).add(g["lr"])
    assert rates == {"head": {1e-3}, "layer.1": {5e-4}, "layer.0": {2.5e-4}, "embeddings": {1.25e-4}}
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim == 1 for p in g["params"]))
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(model.parameters()))  # every parameter in exactly one group
    assert [n for n, _ in named_groups(model)] == ["head", "layer.1", "layer.0", "embeddings"]


def test_dropout_override_reaches_the_model(tiny_model_dir):
    model = load_model(str(tiny_model_dir), ["a", "b"], dropout=0.3)
    assert model.config.hidden_dropout_prob == 0.3 and model.config.attention_probs_dropout_prob == 0.3


@pytest.mark.parametrize("strategy", ["full", "head", "gradual", "lora"])
def test_strategy_is_a_params_switch(strategy):
    assert parse_params({"train": {"strategy": strategy}}).train.strategy == strategy

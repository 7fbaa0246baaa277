"""train.optimizer (adamw | adam | sgd | rmsprop) and train.loss (cross_entropy | focal; mse | huber for regression):
each rule trains only the unfrozen groups, at their layer-wise rates, with torch's fused or foreach implementation."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tasks.config import ConfigError, TrainConfig, parse_params
from tasks.engine.loop import seed_everything
from tasks.engine.losses import choose_loss, make_loss
from tasks.engine.modeling import load_model
from tasks.engine.optimizers import build_optimizer
from tasks.engine.splits import IGNORE_INDEX
from tasks.engine.strategies import build_param_groups, named_groups
from tasks.stages import train

RULES = {"adamw": ("AdamW", "fused"), "adam": ("Adam", "fused"), "sgd": ("SGD", "fused"),
         "rmsprop": ("RMSprop", "foreach")}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_optimizer_keeps_layer_wise_rates_and_its_fastest_implementation(rule, tiny_model_dir):
    model = load_model(str(tiny_model_dir), ["a", "b"])
    groups = build_param_groups(named_groups(model), 1e-3, 0.01, layer_lr_decay=0.5)
    optimizer = build_optimizer(rule, groups, 1e-3, "cpu", momentum=0.8, nesterov=rule == "sgd")
    cls, implementation = RULES[rule]
    assert type(optimizer).__name__ == cls and optimizer.defaults[implementation] is True
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates == pytest.approx({"head": 1e-3, "layer.1": 5e-4, "layer.0": 2.5e-4, "embeddings": 1.25e-4})
    if rule in ("sgd", "rmsprop"):
        assert optimizer.defaults["momentum"] == 0.8
    if rule == "sgd":
        assert optimizer.defaults["nesterov"] is True


@pytest.mark.parametrize("rule", list(RULES))
def test_each_optimizer_trains_the_head_and_leaves_frozen_groups_bit_identical(rule, tiny_model_dir, processed,
                                                                               tmp_path, capsys):
    rate = {"sgd": 0.1, "rmsprop": 1e-3}.get(rule, 1e-2)
    cfg = TrainConfig(model=str(tiny_model_dir), strategy="head", optimizer=rule, learning_rate=rate, epochs=2,
                      num_threads=1, batch_size=16, precision="fp32", early_stopping_patience=3)
    train.run(cfg, processed.output_dir, tmp_path / "m", tmp_path / "t")
    assert f"train: optimizer {rule} ({RULES[rule][1]}), loss cross_entropy" in capsys.readouterr().out
    seed_everything(cfg.seed)  # the untrained model as train built it: same body, same initial head
    before = train.build_model(cfg, json.loads((processed.output_dir / "labels.json").read_text()))[0].state_dict()
    after = load_file(tmp_path / "m" / "model.safetensors")
    body = [k for k in after if not k.startswith(("classifier", "bert.pooler"))]
    assert body and all(torch.equal(after[k], before[k]) for k in body)  # frozen: not one bit moved
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])  # the head trained


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(ConfigError, match="train: .*nesterov needs optimizer sgd with momentum > 0"):
        parse_params({"train": {"optimizer": "adamw", "nesterov": True}})
    with pytest.raises(ConfigError, match="train.optimizer"):
        parse_params({"train": {"optimizer": "lamb"}})


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_discounts_easy_rows():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, 3)  # per token, with unlabelled positions
    targets = torch.randint(0, 3, (6, 5))
    targets[0, 3:] = IGNORE_INDEX
    weight = torch.tensor([1.0, 2.0, 0.5])
    ce = make_loss("cross_entropy", weight, label_smoothing=0.1)(logits, targets)
    focal0 = make_loss("focal", weight, label_smoothing=0.1, focal_gamma=0.0)(logits, targets)
    assert torch.allclose(ce, focal0, atol=1e-6)

    easy = torch.tensor([[8.0, 0.0], [0.0, 8.0]])  # confidently right
    hard = torch.tensor([[0.0, 3.0], [3.0, 0.0]])  # confidently wrong
    y = torch.tensor([0, 1])
    focal = make_loss("focal", focal_gamma=2.0)
    assert focal(easy, y) < 1e-3 * F.cross_entropy(easy, y)
    assert focal(hard, y) > 0.9 * F.cross_entropy(hard, y)


def test_loss_must_fit_the_task():
    assert choose_loss("auto", "classification") == "cross_entropy" and choose_loss("auto", "regression") == "mse"
    with pytest.raises(ConfigError, match="train.loss mse: a classification task takes cross_entropy or focal"):
        choose_loss("mse", "classification")
    with pytest.raises(ConfigError, match="train.loss focal: a regression task takes mse or huber"):
        choose_loss("focal", "regression")
    scores, truth = torch.tensor([[0.0], [10.0]]), torch.tensor([0.0, 0.0])
    assert make_loss("mse")(scores, truth) == 50.0
    assert make_loss("huber", huber_delta=1.0)(scores, truth) == pytest.approx((10 - 0.5) / 2)


def test_focal_training_runs_with_class_weights(tiny_model_dir, processed, tmp_path, capsys):
    cfg = TrainConfig(model=str(tiny_model_dir), loss="focal", focal_gamma=2.0, class_weights="balanced", epochs=1,
                      num_threads=1, batch_size=16, learning_rate=1e-3)
    result = train.run(cfg, processed.output_dir, tmp_path / "m", tmp_path / "t")
    assert "loss focal" in capsys.readouterr().out and result.history[0]["train_loss"] > 0

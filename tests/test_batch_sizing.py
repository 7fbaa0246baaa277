"""Batch size `auto` and its learning-rate rule; device-resident splits batch and train exactly like host splits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tasks.stages import train
from tasks.config import TrainConfig
from tasks.engine import sizing
from tasks.engine.batching import units
from tasks.engine.splits import TaggedSplit, TokenizedSplit
from tasks.engine.loop import fit, static_shapes
from tasks.engine.resident import ResidentSplit, place
from tests.conftest import splits


def test_auto_batch_keeps_32_on_cpu_and_fills_a_token_budget_on_cuda():
    cpu = sizing.choose("auto", 5e-5, "cpu", rows=20000, longest_row=64)
    assert (cpu.batch_size, cpu.learning_rate) == (32, 5e-5)  # the CPU default stays as it is
    big = sizing.choose("auto", 5e-5, "cuda", rows=20000, longest_row=64)
    assert big.batch_size == 256 and big.learning_rate == pytest.approx(5e-5 * math.sqrt(8))  # 16384 / 64 tokens
    assert "16384 tokens" in big.reason and "sqrt(256/32)" in big.reason
    airline = sizing.choose("auto", 5e-5, "cuda", rows=10500, longest_row=64)
    assert airline.batch_size == 208 and "50 steps per epoch" in airline.reason  # 10500 / 50 = 210, to a multiple of 8
    assert sizing.choose("auto", 5e-5, "cuda", rows=3000, longest_row=64).batch_size == 56  # 60, to a multiple of 8
    assert sizing.choose("auto", 5e-5, "cuda", rows=1000, longest_row=64).batch_size == 32  # never below 32
    assert sizing.choose("auto", 5e-5, "cuda", rows=10 ** 6, longest_row=8).batch_size == sizing.MAX_ROWS
    assert sizing.choose("auto", 5e-5, "cuda", rows=20000, longest_row=64, world=2).batch_size == 200  # per process
    assert sizing.choose("auto", 1e-3, "cuda", rows=20000, longest_row=None).batch_size == 64  # images
    explicit = sizing.choose(48, 5e-5, "cuda", rows=20000, longest_row=64)
    assert (explicit.batch_size, explicit.learning_rate) == (48, 5e-5)  # an explicit size: the rate as given


def random_split(tagged: bool, n: int = 203, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 41, size=n)
    ids = [rng.integers(5, 100, size=k) for k in lengths]
    if tagged:
        tags = [np.where(rng.random(k) < 0.3, -100, rng.integers(0, 5, size=k)) for k in lengths]
        return TaggedSplit(ids, np.zeros(n, dtype=np.int64), lengths, 0, tags)
    return TokenizedSplit(ids, rng.integers(0, 3, size=n), lengths, pad_id=1)


@pytest.mark.parametrize("tagged", [False, True], ids=["row-labels", "token-tags"])
@pytest.mark.parametrize("pad_multiple", [None, 16], ids=["dynamic-widths", "static-shapes"])
def test_resident_split_makes_exactly_the_host_splits_batches(tagged, pad_multiple):
    host = random_split(tagged)
    device = ResidentSplit.of(host, torch.device("cpu"))  # the code path a GPU takes, on the CPU
    shapes = static_shapes(host, TrainConfig(batch_size=8, pad_multiple=pad_multiple))
    batches = host.batches(8, np.random.default_rng(3))
    device_batches = device.batches(8, np.random.default_rng(3))  # each carries its indices already on the device
    assert [b.tolist() for b in device_batches] == [b.tolist() for b in batches]
    assert all(torch.equal(b.device_rows, torch.from_numpy(b)) for b in device_batches)
    for idx, device_idx in zip(batches, device_batches):
        want, got = host.collate(idx, train=True), device.collate(device_idx, train=True)
        if shapes is not None:
            want, got = shapes.apply(*want), shapes.apply(*got)
        assert want[0].keys() == got[0].keys()
        for key in want[0]:
            assert torch.equal(want[0][key], got[0][key]), key
        assert torch.equal(want[1], got[1])
        # Throughput counts real tokens from the host's lengths: the same figure as the mask, without a device read.
        assert units(device, idx) == units(host, idx) == int(host.collate(idx)[0]["attention_mask"].sum())


def test_a_cpu_keeps_the_host_split():
    host = random_split(False)
    assert place(host, torch.device("cpu")) is host
    assert isinstance(place(host, torch.device("meta")), ResidentSplit)  # any accelerator: resident


def test_training_from_the_resident_split_ends_with_the_same_weights(tiny_model_dir, processed):
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, learning_rate=3e-3, num_threads=1, batch_size=8,
                      checkpoint_every_steps=None)
    weights = []
    for resident in (False, True):
        model, tokenizer = train.build_model(cfg, ["a", "b", "c", "d"])
        torch.manual_seed(0)
        model.classifier.reset_parameters()
        split, validate, _ = splits(processed.output_dir, tokenizer)
        split = ResidentSplit.of(split, torch.device("cpu")) if resident else split
        _, result = fit(model, split, validate, cfg)
        assert result.batch_size == 8 and result.learning_rate == 3e-3
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

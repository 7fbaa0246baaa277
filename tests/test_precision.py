"""Precision: `auto` picks bf16 from the CPU's own flags (faked here) and fp32 without them, never on a device that
lacks it; a bf16 training step on a CPU runs with a finite loss; bf16 predictions match fp32 ones."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tasks.config import ConfigError, TrainConfig
from tasks.engine import device as engine_device
from tasks.engine.device import choose_precision
from tasks.stages import train

CPU = torch.device("cpu")


def test_auto_picks_bf16_from_the_cpus_flags_and_fp32_without_them():
    assert choose_precision("auto", CPU, flags={"sse4_2", "avx512f", "avx512_bf16"}).name == "bf16"
    assert choose_precision("auto", CPU, flags={"sse4_2", "amx_bf16", "amx_tile"}).name == "bf16"
    plain = choose_precision("auto", CPU, flags={"sse4_2", "avx2", "avx512f"})  # AVX-512 without its bf16 part
    assert plain.name == "fp32" and "no avx512_bf16 or AMX" in plain.reason
    assert choose_precision("auto", torch.device("mps"), flags={"avx512_bf16"}).name == "fp32"
    kept = choose_precision("auto", CPU, flags={"avx512_bf16"}, kind_allows_bf16=False)
    assert kept.name == "fp32" and "keeps fp32" in kept.reason
    assert choose_precision("fp32", CPU, flags={"avx512_bf16"}).name == "fp32"
    with pytest.raises(ConfigError, match="precision bf16: this CPU has no avx512_bf16 or AMX flag"):
        choose_precision("bf16", CPU, flags={"avx2"})
    with pytest.raises(ConfigError, match="precision fp16 runs on CUDA only"):
        choose_precision("fp16", CPU, flags={"avx512_bf16"})


def test_a_bf16_training_step_on_a_cpu_runs_with_a_finite_loss(tiny_model_dir, processed, monkeypatch, capsys):
    monkeypatch.setattr(engine_device, "cpu_flags", lambda: {"avx512_bf16"})  # autocast runs on any x86 CPU
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, num_threads=1, batch_size=16, precision="auto")
    result = train.run(cfg, processed.output_dir, processed.output_dir.parent / "m", processed.output_dir.parent / "t")
    assert result.precision == "bf16" and "precision auto: bf16 (CPU flags avx512_bf16)" in capsys.readouterr().out
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    # the saved model is plain fp32: autocast never changes the master weights
    weights = load_file(processed.output_dir.parent / "m" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_bf16_predictions_match_fp32_on_a_trained_tiny_model(registry_project, monkeypatch):
    import pandas as pd

    from tasks.inference import Predictor

    monkeypatch.setattr(engine_device, "cpu_flags", lambda: {"avx512_bf16"})
    root, params, processed, candidates = registry_project
    texts = pd.read_parquet(processed / "test.parquet", columns=["text"])
    fp32 = Predictor(candidates["good"], precision="fp32").predict(texts)
    bf16_predictor = Predictor(candidates["good"], precision="auto")
    assert bf16_predictor.precision.name == "bf16"
    bf16 = bf16_predictor.predict(texts)
    assert list(bf16.rows) == list(fp32.rows)
    np.testing.assert_allclose(bf16.unit_probs, fp32.unit_probs, atol=1e-2)
    # Its Linear weights are kept in bf16: exactly what autocast computes from the fp32 weights, without the casts.
    assert {m.weight.dtype for m in bf16_predictor.model.modules() if type(m) is torch.nn.Linear} == {torch.bfloat16}
    from_fp32 = Predictor(candidates["good"], precision="auto")
    for module in from_fp32.model.modules():
        if type(module) is torch.nn.Linear:
            module.float()
    np.testing.assert_array_equal(from_fp32.predict(texts).unit_probs, bf16.unit_probs)


def test_threads_follow_physical_cores_not_smt_siblings():
    # 2 sockets x 2 cores x 2 hyper-threads = 8 logical CPUs, 4 cores; this process may run on CPUs 0-3 only.
    cpuinfo = "\n\n".join(f"processor\t: {cpu}\nphysical id\t: {cpu // 4}\ncore id\t\t: {(cpu % 4) // 2}"
                          for cpu in range(8))
    assert engine_device.physical_cores(cpuinfo, allowed=set(range(8))) == 4
    assert engine_device.physical_cores(cpuinfo, allowed={0, 1, 2, 3}) == 2  # CPUs 0-3: socket 0's two cores
    assert engine_device.physical_cores("", allowed={0, 1, 2}) == 3  # no core ids: the logical count


def test_model_server_workers_auto_is_one_per_physical_core_on_a_cpu_and_one_per_gpu(monkeypatch):
    from tasks.serving import server

    monkeypatch.setattr(engine_device, "pick_device", lambda: torch.device("cpu"))
    for cores, workers in ((1, 1), (2, 2), (16, server.MAX_AUTO_WORKERS)):
        monkeypatch.setattr(engine_device, "physical_cores", lambda: cores)
        assert server.inference_workers("auto")[0] == workers
    assert server.inference_workers(3) == (3, "serve.workers")  # as set, on any device
    monkeypatch.setattr(engine_device, "pick_device", lambda: torch.device("cuda"))
    assert server.inference_workers("auto") == (1, "auto: one per accelerator")

"""Issue 4 (engine): LoRA trains only adapters (+ head) and reloads either way; a killed run resumes to the same
result; the train stage runs as 2 DDP processes on CPU (gloo) with the same result shape; torch.compile learns what
eager training learns."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import yaml

from tasks.stages import train
from tasks.engine.splits import TokenizedSplit
from tasks.config import TrainConfig
from tasks.engine.modeling import load_classifier, save_classifier
from tasks.inference import Predictor
from tests.conftest import sh
from tests.test_stages import processed  # noqa: F401  (fixture: a tokenized 4-class dataset on the tiny model)


def splits(processed_dir, tokenizer):
    """The engine's training split and the text kind's validator, as the train stage builds them."""
    import pandas as pd

    from tasks.kinds.base import validator
    from tasks.kinds.text import TextKind

    labels = json.loads((processed_dir / "labels.json").read_text())
    val = pd.read_parquet(processed_dir / "val.parquet")
    return (TokenizedSplit.read(processed_dir / "train.parquet", tokenizer.pad_token_id),
            validator(TextKind(), val, tokenizer, labels), labels)


@pytest.mark.parametrize("save", ["merged", "adapter"])
def test_lora_trains_only_adapters_and_head_and_the_saved_model_predicts_the_same(
        tmp_path, tiny_model_dir, processed, save):  # noqa: F811
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
    reloaded = Predictor(tmp_path / "model", max_length=16).probabilities(texts)
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)
    assert load_classifier(tmp_path / "model").config.id2label == model.config.id2label


def pd_texts(processed_dir) -> list[str]:
    import pandas as pd

    return pd.read_parquet(processed_dir / "test.parquet")["text"].tolist()


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(
        tmp_path, tiny_model_dir, processed):  # noqa: F811
    # Dropout is on (the tiny BERT's 0.1), so the result depends on the restored RNG state too.
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=3, learning_rate=3e-3, num_threads=1, batch_size=8,
                      checkpoint_every_steps=5, early_stopping_patience=3)
    whole = train.run(cfg, processed.output_dir, tmp_path / "whole", tmp_path / "m1", tmp_path / "ck1")
    assert not any((tmp_path / "ck1").iterdir())  # a finished run leaves no checkpoint behind

    def kill_at_step_20(step: int) -> None:  # mid-epoch 2, right after the step-20 checkpoint
        if step == 20:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, processed.output_dir, tmp_path / "resumed", tmp_path / "m2", tmp_path / "ck2", kill_at_step_20)
    assert not (tmp_path / "resumed").exists() and len(list((tmp_path / "ck2").rglob("last.pt"))) == 1
    resumed = train.run(cfg, processed.output_dir, tmp_path / "resumed", tmp_path / "m2", tmp_path / "ck2")
    assert resumed.resumed_from_step == 20 and whole.resumed_from_step == 0
    assert [h["val_macro_f1"] for h in resumed.history] == [h["val_macro_f1"] for h in whole.history]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in whole.history],
                                                                       abs=1e-6)
    assert resumed.best_val_macro_f1 == whole.best_val_macro_f1
    assert (tmp_path / "resumed/model.safetensors").read_bytes() == (tmp_path / "whole/model.safetensors").read_bytes()
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("m1", "m2"))
    assert m1["best_val_macro_f1"] == m2["best_val_macro_f1"] and m2["resumed_from_step"] == 20


def test_a_changed_config_does_not_resume_an_unrelated_run(tmp_path, tiny_model_dir, processed):  # noqa: F811
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=2, num_threads=1, batch_size=8, checkpoint_every_steps=5)

    def crash(step: int) -> None:
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, processed.output_dir, tmp_path / "a", tmp_path / "m", tmp_path / "ck", crash)
    other = cfg.model_copy(update={"learning_rate": 1e-3})
    assert train.run(other, processed.output_dir, tmp_path / "b", tmp_path / "m", tmp_path / "ck").resumed_from_step == 0


@pytest.mark.integration
def test_train_stage_runs_as_two_ddp_processes_on_cpu(tmp_path, tiny_model_dir, processed):  # noqa: F811
    results = {}
    for n in (1, 2):
        params = {"train": {"model": str(tiny_model_dir), "epochs": 2, "batch_size": 8, "learning_rate": 3e-3,
                            "num_threads": 1, "device": "cpu", "processes": n}}
        (tmp_path / f"p{n}.yaml").write_text(yaml.safe_dump(params))
        run = sh(sys.executable, "-m", "tasks.cli", "stage", "train", "--input-dir", str(processed.output_dir),
                 "--model-dir", str(tmp_path / f"model{n}"), "--metrics-dir", str(tmp_path / f"metrics{n}"),
                 "--checkpoint-dir", str(tmp_path / f"ck{n}"), "--params", str(tmp_path / f"p{n}.yaml"),
                 cwd=tmp_path, timeout=300)
        assert f"on cpu x{n}" in run.stdout, run.stdout + run.stderr
        results[n] = json.loads((tmp_path / f"metrics{n}" / "metrics.json").read_text())
    assert results[2]["world_size"] == 2 and results[1]["world_size"] == 1
    assert results[1].keys() == results[2].keys() and results[2]["epochs_run"] == 2
    assert sorted(p.name for p in (tmp_path / "model1").iterdir()) == sorted(p.name for p in (tmp_path / "model2").iterdir())
    reloaded = load_classifier(tmp_path / "model2")
    assert reloaded.config.id2label == load_classifier(tmp_path / "model1").config.id2label
    assert 0 <= results[2]["best_val_macro_f1"] <= 1


def test_static_shapes_keep_every_token_and_every_row_once():
    from tasks.engine.loop import static_shapes

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 61, size=203)  # 203 rows: the last batch of 8 is short
    ids = [rng.integers(5, 100, size=n) for n in lengths]
    split = TokenizedSplit(ids, rng.integers(0, 3, size=203), lengths, pad_id=0)
    shapes = static_shapes(split, TrainConfig(batch_size=8, pad_multiple=16))
    assert shapes.widths() == [16, 32, 48, 60]  # multiples of 16, capped at the longest row: nothing truncated
    seen = []
    for idx in split.batches(8, np.random.default_rng(1)):
        inputs, targets = shapes.apply(*split.collate(idx, train=True))
        width = inputs["input_ids"].shape[1]
        assert inputs["input_ids"].shape == inputs["attention_mask"].shape == (8, width) and width in shapes.widths()
        for row, i in enumerate(idx):
            assert inputs["input_ids"][row, :lengths[i]].tolist() == ids[i].tolist()
            assert inputs["attention_mask"][row].sum() == lengths[i] and targets[row] == split.labels[i]
        assert (targets[len(idx):] == -100).all()  # filler rows carry no target
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(203))  # every row once per epoch, as without static shapes


def test_compiled_training_learns_what_eager_training_learns(tmp_path, tiny_model_dir, processed):  # noqa: F811
    # Dropout off: compiled kernels draw dropout masks from their own generator, so only then can losses be compared.
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=2, learning_rate=3e-3, num_threads=1, batch_size=8,
                      dropout=0.0, early_stopping_patience=2)
    from torch._dynamo.utils import counters

    from tasks.engine.loop import static_shapes

    eager = train.run(cfg, processed.output_dir, tmp_path / "eager", tmp_path / "m1", None)
    counters.clear()
    static = cfg.model_copy(update={"compile": True, "pad_multiple": 8})  # widths 8 and 16 (max_length 16)
    compiled = train.run(static, processed.output_dir, tmp_path / "compiled", tmp_path / "m2", None)
    widths = static_shapes(TokenizedSplit.read(processed.output_dir / "train.parquet"), static).widths()
    # Many row lengths, a short last batch, two epochs: still at most one graph per width, no recompiles beyond.
    assert 1 <= counters["stats"]["unique_graphs"] <= len(widths) == 2, dict(counters["stats"])
    assert [h["train_loss"] for h in compiled.history] == pytest.approx([h["train_loss"] for h in eager.history],
                                                                        rel=1e-3)
    assert [h["val_macro_f1"] for h in compiled.history] == [h["val_macro_f1"] for h in eager.history]
    assert eager.history[-1]["train_loss"] < eager.history[0]["train_loss"]  # it learned something to compare

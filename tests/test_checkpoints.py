"""Resumable training: a killed run resumes from its checkpoint and ends like an uninterrupted one."""
from __future__ import annotations

import json

import pytest

from tasks.config import DataConfig, TrainConfig, ValidateConfig
from tasks.stages import train, validate
from tests.conftest import IMAGE, make_images


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(
        tmp_path, tiny_model_dir, processed):
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
    assert resumed.best_val_score == whole.best_val_score
    assert (tmp_path / "resumed/model.safetensors").read_bytes() == (tmp_path / "whole/model.safetensors").read_bytes()
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("m1", "m2"))
    assert m1["best_val_score"] == m2["best_val_score"] and m2["resumed_from_step"] == 20


def test_a_changed_config_does_not_resume_an_unrelated_run(tmp_path, tiny_model_dir, processed):
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=2, num_threads=1, batch_size=8, checkpoint_every_steps=5)

    def crash(step: int) -> None:
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, processed.output_dir, tmp_path / "a", tmp_path / "m", tmp_path / "ck", crash)
    other = cfg.model_copy(update={"learning_rate": 1e-3})
    assert train.run(other, processed.output_dir, tmp_path / "b", tmp_path / "m", tmp_path / "ck").resumed_from_step == 0


@pytest.fixture(scope="module")
def image_processed(tmp_path_factory, tiny_resnet_dir):
    from tasks.stages import prepare, preprocess
    from tasks.config import PreprocessConfig

    root = tmp_path_factory.mktemp("image-kind")
    cfg = DataConfig(path=str(make_images(root / "imgs", per_class=12)))
    prepare.run(cfg, root / "raw.parquet", kind=IMAGE)
    validate.run(cfg, ValidateConfig(), root / "raw.parquet", root / "ok.parquet", root / "q.csv", root / "v.json",
                 "imgs", kind=IMAGE)
    preprocess.run(PreprocessConfig(image_size=28), str(tiny_resnet_dir), root / "ok.parquet", root / "processed",
                   kind=IMAGE)
    return root / "processed"


def test_a_killed_image_run_resumes_to_the_same_weights_random_crops_included(tmp_path, tiny_resnet_dir,
                                                                                image_processed):
    from tasks.stages import train
    from tasks.config import TrainConfig

    cfg = TrainConfig(model=str(tiny_resnet_dir), epochs=2, learning_rate=3e-3, num_threads=1, batch_size=8,
                      checkpoint_every_steps=3, early_stopping_patience=2)
    whole = train.run(cfg, image_processed, tmp_path / "whole", tmp_path / "m1", tmp_path / "ck1", kind=IMAGE)

    def kill(step: int) -> None:
        if step == 4:  # mid-epoch 1, one step after a checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, image_processed, tmp_path / "resumed", tmp_path / "m2", tmp_path / "ck2", kill, kind=IMAGE)
    resumed = train.run(cfg, image_processed, tmp_path / "resumed", tmp_path / "m2", tmp_path / "ck2", kind=IMAGE)
    assert resumed.resumed_from_step == 3
    assert (tmp_path / "resumed/model.safetensors").read_bytes() == (tmp_path / "whole/model.safetensors").read_bytes()
    assert whole.history[-1]["val_macro_f1"] == resumed.history[-1]["val_macro_f1"]


def test_a_planted_checkpoint_runs_no_code_and_training_starts_over(tmp_path, tiny_model_dir, processed):
    """The checkpoint path is predictable (.tuneline/checkpoints/train/<fingerprint>/last.pt): a pickle planted
    there must not run. It loads with weights_only=True, fails, is set aside, and training starts from step 0."""
    import torch

    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, num_threads=1, batch_size=8, checkpoint_every_steps=5)

    def stop(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, processed.output_dir, tmp_path / "a", tmp_path / "m", tmp_path / "ck", stop)
    (checkpoint,) = (tmp_path / "ck").rglob("last.pt")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # runs at load time under weights_only=False

    torch.save({"model": Payload(), "loop": {}}, checkpoint)
    with pytest.warns(UserWarning, match=r"last\.pt cannot be used \(UnpicklingError.*training starts over"):
        result = train.run(cfg, processed.output_dir, tmp_path / "b", tmp_path / "m", tmp_path / "ck")
    assert not marker.exists() and result.resumed_from_step == 0 and (tmp_path / "b/model.safetensors").exists()

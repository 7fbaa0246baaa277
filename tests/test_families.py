"""Model families: a tiny random-weight model of each family (tests/tiny_families.py) runs one epoch through the real
stages, predicts what the matching `transformers.pipeline` predicts, and every strategy freezes the right parameters.
Decoders (GPT-2, Llama, Qwen2) come without a pad token, as GPT-2 does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn

from tasks.config import ConfigError, TrainConfig, parse_params
from tasks.engine.families import block_list, lora_targets
from tasks.engine.strategies import frozen_groups, named_groups
from tasks.kinds import get_kind
from tasks.stages import evaluate, predict, prepare, preprocess, train, validate
from tests import tiny_families as tf
from tests.conftest import LENIENT, make_images, tiny_texts, user_cfg, user_frame

TEXT, TOKEN, IMAGE = "text-classification", "token-classification", "image-classification"
# A parameter of each family's embeddings (token or patch tables, a CNN's stem) and of its new head.
EMBEDDING = {"bert": "word_embeddings", "roberta": "word_embeddings", "deberta-v2": "word_embeddings",
             "distilbert": "word_embeddings", "modernbert": "tok_embeddings", "gpt2": "wte", "llama": "embed_tokens",
             "qwen2": "embed_tokens", "resnet": "embedder", "convnext": "patch_embeddings",
             "vit": "patch_embeddings", "swin": "patch_embeddings", "efficientnet": "embeddings.convolution"}
HEAD = ("classifier", "score")


@pytest.fixture(scope="session")
def family_model(tmp_path_factory):
    """family -> the directory of its tiny pre-trained body, built once per session."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            out = tmp_path_factory.mktemp(f"family-{family}")
            built[family] = (tf.build_image_model(family, out) if family in tf.IMAGE_FAMILIES
                             else tf.build_text_model(family, out, tiny_texts(600)))
        return built[family]

    return get


def token_source(path: Path) -> Path:
    people, places = ["Anna", "Omar", "Lena", "Ravi"], ["Paris", "Lagos", "Oslo", "Lima"]
    rows = [{"tokens": [p, "flew", "to", c, "today"], "tags": ["B-person", "O", "O", "B-location", "O"]}
            for p in people for c in places] * 3
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


def run_stages(kind: str, model: Path, work: Path, **train_settings) -> tuple[Path, dict]:
    """prepare -> validate -> preprocess -> train (1 epoch) -> evaluate, the functions the DVC stages call."""
    if kind == TEXT:
        source = work / "reviews.csv"
        user_frame(30).to_csv(source, index=False)
        data = user_cfg(source).model_dump()
    elif kind == TOKEN:
        data = {"path": str(token_source(work / "ner.jsonl"))}
    else:
        data = {"path": str(make_images(work / "images", per_class=12))}
    params = parse_params({"task": {"kind": kind}, "data": data, "validate": LENIENT.model_dump(),
                           "preprocess": {"max_length": 24, "image_size": tf.IMAGE_SIDE},
                           "train": {"model": str(model), "epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
                                     "num_threads": 1, "checkpoint_every_steps": None, **train_settings}})
    k = get_kind(kind)
    prepare.run(params.data, work / "raw.parquet", work / "batches", kind=k)
    validate.run(params.data, params.validate_, work / "raw.parquet", work / "ok.parquet", work / "q.csv",
                 work / "v.json", source="test", kind=k)
    preprocess.run(params.preprocess, str(model), work / "ok.parquet", work / "processed", None, kind=k)
    train.run(params.train, work / "processed", work / "model", work / "train", None, kind=k)
    metrics = evaluate.run(params.evaluate, work / "processed", work / "model", work / "eval.json", None,
                           base_model=str(model), kind=k, precision="fp32")
    return work / "model", metrics


def pipeline_probs(task: str, model: Path, inputs: list, labels: list[str]) -> np.ndarray:
    from transformers import pipeline

    out = pipeline(task, model=str(model), top_k=len(labels))(inputs)
    return np.array([[{r["label"]: r["score"] for r in row}[name] for name in labels] for row in out])


@pytest.mark.parametrize("family", tf.TEXT_FAMILIES)
def test_text_family_trains_through_the_stages_and_predicts_as_the_pipeline_does(family, family_model, tmp_path):
    model, metrics = run_stages(TEXT, family_model(family), tmp_path)
    assert metrics["n_test"] > 0 and 0 <= metrics["model"]["macro_f1"] <= 1
    texts = ["awful item", "a great item, the best one I have bought in a very long time", "fine", "poor item 3"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    predict.run(tmp_path / "in.csv", tmp_path / "out.csv", model, precision="fp32")
    out = pd.read_csv(tmp_path / "out.csv")
    labels = [c.removeprefix("prob_") for c in out.columns if c.startswith("prob_")]
    np.testing.assert_allclose(out[[f"prob_{n}" for n in labels]].to_numpy(),
                               pipeline_probs(TEXT, model, texts, labels), atol=1e-5)
    if family in tf.DECODERS:  # no pad token of its own: its end-of-text token pads, saved for pipeline()
        config = json.loads((model / "config.json").read_text())
        saved = json.loads((model / "tokenizer_config.json").read_text())
        assert config["pad_token_id"] is not None and saved["pad_token"] == saved["eos_token"]
        # The classifier pools each row's last real token: a short row predicts the same beside a long one.
        alone = [pipeline_probs(TEXT, model, [t], labels)[0] for t in texts]
        np.testing.assert_allclose(out[[f"prob_{n}" for n in labels]].to_numpy(), np.vstack(alone), atol=1e-5)


@pytest.mark.parametrize("family", tf.IMAGE_FAMILIES)
def test_image_family_trains_through_the_stages_and_predicts_as_the_pipeline_does(family, family_model, tmp_path):
    model, metrics = run_stages(IMAGE, family_model(family), tmp_path)
    assert metrics["n_test"] > 0
    folder = make_images(tmp_path / "new", per_class=2, seed=1)  # sizes 36-80 px, not square
    predict.run(folder, tmp_path / "out.csv", model, precision="fp32")
    out = pd.read_csv(tmp_path / "out.csv")
    labels = [c.removeprefix("prob_") for c in out.columns if c.startswith("prob_")]
    np.testing.assert_allclose(out[[f"prob_{n}" for n in labels]].to_numpy(),
                               pipeline_probs(IMAGE, model, [str(folder / p) for p in out["path"]], labels),
                               atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_token_classification_trains_on_encoders_and_decoders(family, family_model, tmp_path):
    from transformers import pipeline

    model, metrics = run_stages(TOKEN, family_model(family), tmp_path)
    assert metrics["n_test"] > 0 and "entity_f1" in metrics["model"]
    pd.DataFrame({"text": ["Anna flew to Oslo today"]}).to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    predict.run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", model, precision="fp32")
    tags = pd.read_json(tmp_path / "out.jsonl", lines=True)["predicted_tags"][0]
    assert len(tags) == 5  # one tag per word, whatever the sub-word split
    found = pipeline(TOKEN, model=str(model), aggregation_strategy="simple")("Anna flew to Oslo today")
    assert all(e["entity_group"] in {"person", "location"} for e in found)


def text_labels() -> list[str]:
    return ["a", "b", "c"]


@pytest.mark.parametrize("family", tf.TEXT_FAMILIES + tf.IMAGE_FAMILIES)
def test_each_strategy_finds_the_familys_blocks_and_freezes_the_right_parameters(family, family_model):
    from tasks.stages.train import build_model

    kind = IMAGE if family in tf.IMAGE_FAMILIES else TEXT
    model, _ = build_model(TrainConfig(model=str(family_model(family))), text_labels(), kind)
    groups = dict(named_groups(model))
    names = list(groups)
    blocks = block_list(model)
    assert names == ["head", *[f"layer.{i}" for i in reversed(range(len(blocks)))], "embeddings"]
    assert len(blocks) >= 2  # transformer blocks, or a CNN's stages
    assert any(EMBEDDING[family] in n for n, _ in groups["embeddings"])
    assert not any(EMBEDDING[family] in n for g in names if g != "embeddings" for n, _ in groups[g])
    head = {n for n, _ in groups["head"]}
    assert any(n.startswith(HEAD) for n in head)
    for block_param in (n for g in names if g.startswith("layer.") for n, _ in groups[g]):
        assert not block_param.startswith(HEAD)
    # head: only the head trains; gradual, epoch 2: the head and the top block.
    for strategy, epoch, trainable in (("head", 1, {"head"}), ("gradual", 2, {"head", names[1]})):
        frozen = set(frozen_groups(strategy, epoch, names))
        assert set(names) - frozen == trainable

    lora, _ = build_model(TrainConfig(model=str(family_model(family)), strategy="lora"), text_labels(), kind)
    training = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in training)
    assert all("lora_" in n or any(h in n for h in HEAD) for n in training), training


def test_unknown_architecture_fails_naming_the_setting_to_use(tiny_model_dir):
    from tasks.engine.modeling import load_model

    class Mystery(nn.Module):  # blocks in a list whose name no family uses
        def __init__(self):
            super().__init__()
            self.vocab = nn.Embedding(10, 4)
            self.stack = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
            self.classifier = nn.Linear(4, 2)

    mystery = Mystery()
    with pytest.raises(ConfigError, match=r"train\.blocks: cannot find the blocks of Mystery \(train\.strategy head"
                                          r" needs them\).*stack"):
        named_groups(mystery, needed_by="train.strategy head")
    assert [n for n, _ in named_groups(mystery)] == ["head"]  # full fine-tuning at one rate needs no groups
    assert [n for n, _ in named_groups(mystery, blocks="stack")] == ["head", "layer.1", "layer.0", "embeddings"]
    with pytest.raises(ConfigError, match="train.blocks: Mystery has no module nowhere"):
        named_groups(mystery, blocks="nowhere")

    bert = load_model(str(tiny_model_dir), ["a", "b"])
    bert.config.model_type = "mystery-net"  # an architecture neither PEFT nor tuneline has a LoRA default for
    with pytest.raises(ConfigError, match=r"train\.lora\.target_modules: .*mystery-net.*query"):
        lora_targets(bert)
    from tasks.engine.modeling import add_lora

    adapted = add_lora(bert, 4, 8, 0.0, target_modules=["query"])  # naming them is the way out
    assert any("lora_" in n for n, p in adapted.named_parameters() if p.requires_grad)


def test_a_strategy_that_needs_groups_never_falls_back_to_full_training(tiny_model_dir, processed, tmp_path,
                                                                        monkeypatch):
    from tasks.engine import families

    monkeypatch.setattr(families, "BLOCK_LIST_NAMES", ("no-such-list",))
    cfg = TrainConfig(model=str(tiny_model_dir), strategy="head", epochs=1, num_threads=1, batch_size=16)
    with pytest.raises(ConfigError, match="train.blocks"):
        train.run(cfg, processed.output_dir, tmp_path / "m", tmp_path / "t")
    assert not (tmp_path / "m").exists()


def test_tiny_families_are_what_they_claim(family_model):
    from transformers import AutoConfig

    types = {f: AutoConfig.from_pretrained(family_model(f)).model_type for f in tf.TEXT_FAMILIES}
    assert types == {"bert": "bert", "roberta": "roberta", "deberta-v2": "deberta-v2", "distilbert": "distilbert",
                     "modernbert": "modernbert", "gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2"}
    from transformers import AutoTokenizer

    for f in tf.DECODERS:
        tok = AutoTokenizer.from_pretrained(family_model(f))
        assert tok.eos_token is not None and (tok.pad_token is None or f == "qwen2")  # Qwen2's class defaults one

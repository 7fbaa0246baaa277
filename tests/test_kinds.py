"""Issue 11: token and image classification behind the kind seam - label alignment, metrics, bad inputs."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from tasks import checks
from tasks.stages import validate
from tasks.config import DataConfig, ValidateConfig
from tasks.engine.splits import IGNORE_INDEX
from tasks.kinds import get_kind
from tasks.kinds.token import entities, words_and_offsets
from tests.conftest import make_images

TOKEN, IMAGE = get_kind("token-classification"), get_kind("image-classification")
LENIENT = ValidateConfig(min_rows=1, min_rows_per_class=1, max_quarantine_share=1.0)


# --- token classification ---------------------------------------------------------------------------------------------

def test_token_tags_go_to_each_words_first_sub_token_only(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = ["Zyxwvut", "flew", "to", "Qqqzzz", "today"]  # made-up words split into several word pieces
    tags = ["B-person", "O", "O", "B-geo-loc", "O"]
    labels = ["B-geo-loc", "B-person", "O"]
    table, _ = TOKEN.encode(pd.DataFrame({"tokens": [words], "tags": [tags]}), tokenizer,
                            type("Cfg", (), {"max_length": 64})(), labels)
    ids, targets, starts = table["input_ids"][0], table["tag_ids"][0], table["word_starts"][0]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert len(tokenizer.tokenize("Zyxwvut")) > 1 and len(tokenizer.tokenize("Qqqzzz")) > 1  # the point of the test
    # The first piece of each word carries the word's tag; every other position is ignored by the loss.
    assert [targets[s] for s in starts] == [labels.index(t) for t in tags]
    assert set(np.delete(targets, starts)) == {IGNORE_INDEX}
    assert [pieces[s] for s in starts] == [tokenizer.tokenize(w)[0] for w in words]
    # The loss really skips them: cross-entropy over the ignored positions alone contributes nothing.
    import torch

    logits = torch.randn(len(targets), len(labels))
    full = torch.nn.functional.cross_entropy(logits, torch.as_tensor(targets, dtype=torch.long),
                                             ignore_index=IGNORE_INDEX)
    firsts = torch.nn.functional.cross_entropy(logits[starts], torch.as_tensor(targets[starts], dtype=torch.long))
    assert torch.isclose(full, firsts)


def test_entity_scores_are_seqevals_on_known_predictions():
    from seqeval.metrics import accuracy_score, classification_report, f1_score

    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-PER"]]
    y_pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O", "O", "B-LOC"]]
    labels = ["B-LOC", "B-ORG", "B-PER", "I-ORG", "I-PER", "O"]
    s = TOKEN.scores(np.array(y_true, dtype=object), np.array(y_pred, dtype=object), labels)
    assert s["entity_f1"] == pytest.approx(f1_score(y_true, y_pred)) == pytest.approx(2 * (1 / 3) * (1 / 4) / (7 / 12))
    assert s["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    report = classification_report(y_true, y_pred, output_dict=True)
    for entity_type in ("PER", "LOC", "ORG"):
        assert s["per_class"][entity_type]["f1-score"] == pytest.approx(report[entity_type]["f1-score"])
    assert s["per_class"]["ORG"]["f1-score"] == 0.0 and s["per_class"]["PER"]["recall"] == 0.5
    assert s["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])


def test_bad_token_rows_are_quarantined_with_row_and_rule(tmp_path):
    src = tmp_path / "ner.conll"
    src.write_text("EU B-ORG\nrejects O\nGerman B-MISC\n\n"      # row 1: fine
                   "Peter B-PER\nBlackburn I-PER\n\n"            # row 2: fine
                   "in O\nLondon I-LOC\n\n"                      # row 3: I- without its B-
                   "Paris B-CITY\nis X-LOC\n\n"                   # row 4: unknown tag
                   "Rome\nis O\n\n"                              # row 5: a token without a tag
                   "EU B-ORG\nrejects O\nGerman B-MISC\n",       # row 6: duplicate of row 1
                   encoding="utf-8")
    cfg = DataConfig(path=str(src))
    out = checks.check(TOKEN.read_source(cfg), cfg, LENIENT, str(src), kind=TOKEN)
    rules = dict(zip(out.quarantine["row"], out.quarantine["rule"]))
    assert rules == {3: "bio_order", 4: "unknown_tag", 5: "length_mismatch", 6: "duplicate_text"}
    details = dict(zip(out.quarantine["row"], out.quarantine["detail"]))
    assert details[3] == ("I-LOC at token 2 follows O (an I- tag must continue a B- or I- of its type) "
                          "(sentence from line 8)")
    assert details[4].startswith("tag 'X-LOC' at token 2 is not a BIO tag") and details[4].endswith("line 11)")
    assert details[5] == "2 tokens but 1 tags (sentence from line 14)"
    assert out.accepted["row"].tolist() == [1, 2] and out.report.class_counts == {"MISC": 1, "ORG": 1, "PER": 1}


def test_token_batch_tags_are_checked_against_the_training_tag_set(tmp_path):
    src = tmp_path / "batch.jsonl"
    pd.DataFrame({"tokens": [["a", "b"], ["c", "d"]], "tags": [["B-PER", "O"], ["B-GPE", "O"]]}).to_json(
        src, orient="records", lines=True)
    cfg = DataConfig()
    out = checks.check(TOKEN.read_file(src, cfg), cfg, LENIENT, str(src), known_labels=["B-PER", "I-PER", "O"],
                         require_classes=False, kind=TOKEN)
    assert dict(zip(out.quarantine["row"], out.quarantine["rule"])) == {2: "unknown_tag"}


def test_entities_carry_character_spans_of_the_raw_text():
    text = "Yesterday Angela Merkel met Acme Corp. in Berlin"
    words, offsets = words_and_offsets(text)
    tags = ["O", "B-person", "I-person", "O", "B-company", "I-company", "O", "O", "B-geo-loc"]
    assert len(words) == len(tags)
    found = entities(words, tags, np.full(len(tags), 0.9), offsets, text)
    assert [(e["entity_group"], e["word"], text[e["start"]:e["end"]]) for e in found] == [
        ("person", "Angela Merkel", "Angela Merkel"), ("company", "Acme Corp", "Acme Corp"),
        ("geo-loc", "Berlin", "Berlin")]


# --- image classification -------------------------------------------------------------------------------------------

def test_bad_images_are_quarantined_with_path_and_rule(tmp_path):
    from PIL import Image

    root = make_images(tmp_path / "imgs", per_class=6)
    good = (root / "red" / "0.png").read_bytes()
    (root / "red" / "truncated.jpg").write_bytes(jpeg(64)[:300])
    Image.fromarray(np.full((48, 48, 4), 200, np.uint8), "RGBA").save(root / "blue" / "alpha.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "blue" / "one-pixel.png")
    (root / "blue" / "not-an-image.png").write_bytes(b"plain text")
    (root / "blue" / "copy.png").write_bytes(good)  # same bytes as red/0.png, another label
    cfg = DataConfig(path=str(root))
    frame = IMAGE.read_source(cfg)

    def rule_of(outcome) -> dict[str, str]:
        return {p.split("/imgs/")[1]: r for p, r in zip(outcome.quarantine["path"], outcome.quarantine["rule"])}

    converted = checks.check(frame, cfg, LENIENT, str(root), kind=IMAGE)
    assert rule_of(converted) == {"red/truncated.jpg": "truncated", "blue/one-pixel.png": "tiny_image",
                                  "blue/not-an-image.png": "unreadable", "blue/copy.png": "conflicting_label",
                                  "red/0.png": "conflicting_label"}
    assert converted.report.kind_flags == {"converted_modes": {"RGBA": 1}}
    details = " | ".join(converted.quarantine["detail"])
    assert "1x1 pixels is below validate.min_image_side=32" in details and "truncated" in details
    strict = checks.check(frame, cfg, LENIENT.model_copy(update={"image_mode_action": "quarantine"}), str(root),
                            kind=IMAGE)
    assert rule_of(strict)["blue/alpha.png"] == "image_mode"
    # Accepted images are decoded to RGB squares; the alpha one lands on white.
    table, _ = IMAGE.encode(converted.accepted, None, type("Cfg", (), {"image_size": 28})(), ["blue", "green", "red"])
    alpha = table[table["path"].str.endswith("alpha.png")]["pixels"].iloc[0]
    pixels = np.frombuffer(alpha, np.uint8)
    assert len(pixels) == 32 * 32 * 3 and abs(pixels.astype(int) - 212).max() <= 1  # grey 200 at alpha 200 on white


def test_a_bad_image_given_to_predict_is_named(tmp_path, tiny_image_model):
    from tasks.stages import predict
    from tasks.files.tables import DataFileError

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(jpeg(40))
    (folder / "broken.jpg").write_bytes(jpeg(40)[:200])
    with pytest.raises(DataFileError, match=r"broken\.jpg: cannot decode: .* \(rule: truncated\); 1 of 2 images"):
        predict.run(folder, tmp_path / "out.csv", tiny_image_model)
    assert not (tmp_path / "out.csv").exists()


def jpeg(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_kind_is_a_validated_param():
    from tasks.config import ConfigError, parse_params

    assert parse_params({"task": {"kind": "token-classification"}}).task.kind == "token-classification"
    with pytest.raises(ConfigError, match=r"task\.kind"):
        parse_params({"task": {"kind": "speech"}})
    json.dumps(parse_params({}).model_dump(by_alias=True))


# --- the seed practices and monitoring apply to every kind --------------------------------------------------------------

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


def test_cnn_stages_are_the_layer_groups_for_head_gradual_and_layer_wise_rates(tiny_resnet_dir):
    from tasks.config import TrainConfig
    from tasks.engine.strategies import build_param_groups, frozen_groups, named_groups
    from tasks.stages.train import build_model

    model, _ = build_model(TrainConfig(model=str(tiny_resnet_dir)), ["a", "b"], IMAGE)
    names = [name for name, _ in named_groups(model)]
    assert names == ["head", "layer.1", "layer.0", "embeddings"]  # classifier, ResNet stages top-down, stem
    assert frozen_groups("gradual", 2, names) == ["layer.0", "embeddings"]
    rates = {g["name"]: g["lr"] for g in build_param_groups(model, 1e-3, 0.0, layer_lr_decay=0.5)}
    assert rates == pytest.approx({"head": 1e-3, "layer.1": 5e-4, "layer.0": 2.5e-4, "embeddings": 1.25e-4})


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


def test_image_drift_sees_brightness_and_embeddings_move(tmp_path, tiny_image_model):
    from PIL import Image

    from tasks.monitoring import drift
    from tasks.inference import Predictor

    reference = IMAGE.read_file(make_images(tmp_path / "ref", per_class=20), DataConfig())
    dark = tmp_path / "dark"
    for src in (tmp_path / "ref").rglob("*.png"):  # the same scenes, much darker (a new camera, say)
        target = dark / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(Image.open(src)) * 0.3).astype(np.uint8)).save(target)
    predictor = Predictor(tiny_image_model, batch_size=32)
    ref_profile = predictor.profile(reference)
    current, live = predictor.profile_and_live(IMAGE.read_file(dark, DataConfig()))
    summary = drift.check(ref_profile, current, tmp_path / "drift.html", live=live)
    assert {"brightness", "contrast", "model_embeddings"} <= set(summary.drifted), summary.columns
    assert "width" not in summary.drifted and "text" not in {c.column for c in summary.columns}
    assert summary.live is not None and 0 <= summary.live["macro_f1"] <= 1
    page = (tmp_path / "drift.html").read_text()
    assert page.index("checked columns drifted") < page.index("root_metric")  # the verdict before Evidently's details


def test_token_profiles_carry_entities_lengths_and_live_entity_scores(tmp_path, tiny_model_dir):
    from tasks.stages import train
    from tasks.config import TrainConfig
    from tasks.engine.modeling import save_classifier
    from tasks.inference import Predictor
    from tasks.kinds import mark_model_kind

    labels = ["B-PER", "I-PER", "O"]
    model, tokenizer = train.build_model(TrainConfig(model=str(tiny_model_dir)), labels, TOKEN)
    save_classifier(model, tokenizer, tmp_path / "m", str(tiny_model_dir))
    mark_model_kind(tmp_path / "m", TOKEN)
    rows = pd.DataFrame({"tokens": [["hello", "Anna", "Smith"], ["no", "names", "here", "at", "all"]],
                         "tags": [["O", "B-PER", "I-PER"], ["O"] * 5]})
    profile, live = Predictor(tmp_path / "m").profile_and_live(rows)
    assert profile["token_count"].tolist() == [3.0, 5.0] and profile["label"].tolist() == ["PER", "none"]
    assert {"oov_share", "capitalized_share", "predicted_entities", "confidence", "text"} <= set(profile.columns)
    assert set(live) >= {"entity_f1", "macro_f1", "accuracy"}  # the kind's own scores, not a per-row proxy

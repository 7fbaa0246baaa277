"""Drift profiles and checks: the training topic against other topics, darker images, token profiles and live scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, MonitorConfig
from tasks.kinds.text import TextKind
from tasks.monitoring import drift, profile
from tasks.monitoring.decision import decide
from tests.conftest import IMAGE, LABELS, TOKEN, make_images


@pytest.fixture(scope="module")
def tweets() -> dict[str, pd.DataFrame]:
    """Real tweets: a reference and a fresh sample of the airline topic, and a sample of the other topics."""
    cfg = DataConfig(embedded_topic_pattern=None)
    df = TextKind().read_source(cfg)
    airline = df["text"].str.contains(DataConfig().embedded_topic_pattern, case=False)
    a = df[airline].sample(600, random_state=0)
    return {"reference": a.iloc[:300], "same": a.iloc[300:], "other": df[~airline].sample(300, random_state=1)}


@pytest.fixture(scope="module")
def minilm_predictor(tmp_path_factory):
    """The packaged MiniLM with a seeded, untrained 3-class head: its embeddings and predictions follow the topic."""
    import torch

    from tasks.config import TrainConfig
    from tasks.stages.train import build_model
    from tasks.inference import Predictor

    torch.manual_seed(0)
    model, tokenizer = build_model(TrainConfig(), LABELS)
    out = tmp_path_factory.mktemp("minilm-head")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Predictor(out, max_length=64, batch_size=64)


@pytest.mark.smoke
def test_same_topic_batch_shows_no_drift_and_other_topics_drift_in_text_and_predictions(tweets, minilm_predictor):
    build = lambda df: profile.build(minilm_predictor, df["text"].tolist(), df["label"].tolist())  # noqa: E731
    reference = build(tweets["reference"])
    cfg = MonitorConfig()

    same = drift.check(reference, build(tweets["same"]))
    assert "text" not in same.drifted and same.drift_share < cfg.drift_share, same.columns
    assert not decide(same, cfg, production_score=None, pending_labelled_rows=300).retrain

    other = drift.check(reference, build(tweets["other"]))
    assert {"text", "predicted_label", "model_embeddings", "label"} <= set(other.drifted), other.columns
    assert other.drift_share >= cfg.drift_share
    decision = decide(other, cfg, production_score=None, pending_labelled_rows=300)
    assert decision.retrain and "drift share" in decision.reasons[0]
    assert other.live is not None and 0 <= other.live["macro_f1"] <= 1


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

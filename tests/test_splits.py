"""Preprocess: stratified, disjoint, reproducible splits; leakage between them; augmentation of training rows only."""
from __future__ import annotations

import pandas as pd

from tasks.config import PreprocessConfig
from tasks.kinds.text_augment import augment
from tasks.stages import preprocess


def test_preprocess_is_stratified_disjoint_and_byte_identical(tmp_path, tiny_model_dir, processed):
    parts = {s: pd.read_parquet(processed.output_dir / f"{s}.parquet") for s in preprocess.SPLITS}
    assert sum(len(p) for p in parts.values()) == 160
    for part in parts.values():  # 4 balanced classes stay balanced in every split
        assert part["label"].value_counts().nunique() == 1
    texts = [set(p["text"]) for p in parts.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert (parts["train"]["length"] <= 16).all()
    again = preprocess.run(PreprocessConfig(max_length=16), str(tiny_model_dir), tmp_path / "ok.parquet",
                           tmp_path / "processed2")
    for name in [*(f"{s}.parquet" for s in preprocess.SPLITS), "labels.json"]:
        assert (processed.output_dir / name).read_bytes() == (again.output_dir / name).read_bytes()


def test_leakage_check_finds_and_removes_a_planted_duplicate():
    parts = {"train": pd.DataFrame({"text": ["Delayed again @united", "great crew"], "label": ["n", "p"]}),
             "val": pd.DataFrame({"text": ["delayed   AGAIN @jetblue", "lost bag"], "label": ["n", "n"]}),
             "test": pd.DataFrame({"text": ["on time", "lost bag"], "label": ["p", "n"]})}
    masks = preprocess.find_leakage(parts)
    assert masks["val"].tolist() == [True, False] and masks["test"].tolist() == [False, True]
    cleaned, removed = preprocess.remove_leakage(parts)
    assert removed == 2 and cleaned["val"]["text"].tolist() == ["lost bag"]
    assert cleaned["test"]["text"].tolist() == ["on time"]


def test_grouped_split_keeps_near_duplicates_in_one_split():
    base = [f"tweet number {i} about flights" for i in range(200)]
    texts = base + [t.upper() + " http://t.co/x" for t in base[:50]]  # 50 near-duplicates of the first 50
    df = pd.DataFrame({"text": texts, "label": ["a", "b"] * 100 + ["a", "b"] * 25})
    parts = preprocess.split(df, PreprocessConfig())
    _, removed = preprocess.remove_leakage(parts)
    assert removed == 0 and sum(len(p) for p in parts.values()) == 250


def test_augmentation_touches_training_rows_only_and_is_deterministic():
    train = pd.DataFrame({"text": ["the flight was late again today", "crew was kind and helpful"],
                          "label": ["n", "p"]})
    a = augment(train, "text", copies=2, methods=["random_deletion", "random_swap"], p=0.3, seed=1)
    b = augment(train, "text", copies=2, methods=["random_deletion", "random_swap"], p=0.3, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert a["augmented"].sum() >= 2 and not a.loc[~a["augmented"], "text"].ne(train["text"].values).any()
    assert augment(train, "text", copies=0, methods=["random_swap"], p=0.3, seed=1)["augmented"].sum() == 0

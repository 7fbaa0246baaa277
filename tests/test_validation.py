"""The data-quality gate: each kind of bad input has its own message; valid oddities pass; the corpus is reported."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks import checks
from tasks.config import DataConfig, ValidateConfig
from tasks.kinds.text import TextKind
from tasks.stages import prepare, validate
from tests.conftest import LENIENT, user_cfg, user_frame


def frame(texts, labels) -> pd.DataFrame:
    return pd.DataFrame({"row": range(1, len(texts) + 1), "text": texts, "label": labels})


def quarantined(outcome) -> dict[int, str]:
    return dict(zip(outcome.quarantine["row"], outcome.quarantine["rule"]))


# --- row-level rules: quarantine with row number, rule and detail; the rest continue ------------------------------


def test_each_row_rule_quarantines_with_row_and_rule():
    texts = ["good flight", "   ", "ok", "meh", "great crew", "Great   crew http://t.co/x @united",
             "good flight", "bad seat", "bad seat ", "caf\ufffd latte", "Ã© mojibake", "fine", "awful food"]
    labels = ["pos", "neg", "", "pos", "pos", "pos", "pos", "neg", "pos", "neg", "neg", "spam", "neg"]
    cfg = LENIENT.model_copy(update=dict(labels=["pos", "neg"], min_chars=4, encoding_action="quarantine"))
    out = checks.check(frame(texts, labels), DataConfig(), cfg, "f.csv")
    assert quarantined(out) == {2: "blank_text", 3: "blank_label", 12: "unknown_label", 4: "too_short",
                                10: "encoding", 11: "encoding", 8: "conflicting_label", 9: "conflicting_label",
                                7: "duplicate_text", 6: "near_duplicate"}
    details = dict(zip(out.quarantine["row"], out.quarantine["detail"]))
    assert details[7] == "same text as row 1"
    assert details[6].startswith("same text as row 5 after normalizing")
    assert "spam is not one of ['neg', 'pos']" in details[12]
    assert out.accepted["row"].tolist() == [1, 5, 13]
    assert out.report.quarantined_by_rule["encoding"] == 2 and out.report.rows_quarantined == 10


def test_encoding_problems_are_counted_but_kept_by_default():
    out = checks.check(frame(["caf\ufffd latte", "naÃ¯ve", "fine text", "\x93quoted\x94"], ["a", "b", "a", "b"]),
                         DataConfig(), LENIENT, "f.csv")
    assert out.report.encoding_flags == {"undecodable": 1, "mojibake": 2}
    assert len(out.accepted) == 4


def test_batch_labels_are_checked_against_the_training_label_set():
    out = checks.check(frame(["a b", "c d", "e f"], ["pos", "neg", "angry"]), DataConfig(), LENIENT, "batch.csv",
                         known_labels=["neg", "neu", "pos"])
    assert quarantined(out) == {3: "unknown_label"}


# --- dataset-level rules: a clear message naming file, column and rule; nothing written ---------------------------


@pytest.mark.parametrize("df, cfg, message", [
    (frame([], []), ValidateConfig(), r"f\.csv: the file has no data rows \(rule: empty file\)"),
    (frame(["a", "b", "c"], ["x", "y", "x"]), ValidateConfig(min_rows=5),
     r"f\.csv: only 3 rows pass the row-level rules; validate\.min_rows requires 5"),
    (frame(["a", "b", "c"], ["x", "x", "x"]), LENIENT,
     r"f\.csv: column 'sentiment' has a single class \(x\); training needs at least two \(rule: one class\)"),
    (frame(["a", "b", "c"], ["x", "x", "y"]), ValidateConfig(min_rows=1, min_rows_per_class=2),
     r"f\.csv: column 'sentiment': classes below validate\.min_rows_per_class=2: y \(1\)"),
    (frame(["a", " ", " ", "b"], ["x", "y", "x", "y"]), ValidateConfig(min_rows=1, min_rows_per_class=1,
                                                                  max_quarantine_share=0.25),
     r"f\.csv: 50\.0% of rows fail row-level rules \(\{'blank_text': 2\}\); validate\.max_quarantine_share is 25\.0%"),
])
def test_dataset_level_rules_have_specific_messages(tmp_path, df, cfg, message):
    raw = tmp_path / "raw.parquet"
    df.to_parquet(raw)
    with pytest.raises(checks.ValidationFailed, match=message):
        validate.run(DataConfig(), cfg, raw, tmp_path / "ok.parquet", tmp_path / "q.csv", tmp_path / "r.json", "f.csv")
    assert not any((tmp_path / f).exists() for f in ("ok.parquet", "q.csv", "r.json"))


@pytest.mark.parametrize("missing, key", [("review", "data.text_column"), ("stars", "data.label_column")])
def test_validate_names_missing_column_and_file(tmp_path, missing, key):
    src = tmp_path / "reviews.csv"
    user_frame().drop(columns=[missing]).to_csv(src, index=False)
    raw = prepare.run(user_cfg(src), tmp_path / "raw.parquet").output
    with pytest.raises(checks.ValidationFailed) as exc:
        validate.run(user_cfg(src), ValidateConfig(), raw, tmp_path / "ok.parquet", tmp_path / "q.csv",
                     tmp_path / "rep.json", str(src))
    msg = str(exc.value)
    assert str(src) in msg and repr(missing) in msg and key in msg
    assert not any((tmp_path / f).exists() for f in ("ok.parquet", "q.csv", "rep.json"))


# --- valid oddities and the embedded default corpus ---------------------------------------------------------------


def test_valid_oddities_are_accepted(tmp_path):
    long_text = "very long tweet " * 5000
    src = tmp_path / "odd.csv"
    src.write_text('id,text,label,extra\n'
                   '1,"Hello, world","pos",a\n'
                   '2,"two\nline ""quoted"" text",neg,b\n'
                   '3,flight was great 😀✈️,pos,c\n'
                   f'4,{long_text},neg,d\n', encoding="utf-8")
    cfg = DataConfig(path=str(src), label_column="label", include_pattern=None)
    raw = prepare.run(cfg, tmp_path / "raw.parquet").output
    out = checks.check(pd.read_parquet(raw), cfg, LENIENT, str(src))
    assert out.accepted["text"].tolist() == ["Hello, world", 'two\nline "quoted" text', "flight was great 😀✈️",
                                             long_text.strip()]
    assert {"id", "extra"} <= set(out.accepted.columns) and out.report.rows_quarantined == 0
    assert out.report.length["outliers"] >= 0 and out.report.length["chars"]["max"] == len(long_text.strip())


def test_embedded_corpus_passes_with_duplicates_reported():
    cfg = DataConfig(embedded_topic_pattern=None)
    out = checks.check(TextKind().read_source(cfg), cfg, ValidateConfig(), TextKind().source_label(cfg))
    r = out.report
    assert r.rows_in == 38158
    rules = r.quarantined_by_rule
    # Measured on this file: 915 exact duplicate texts (many labelled differently), more near-duplicates, no blanks.
    assert rules["duplicate_text"] > 300 and rules["near_duplicate"] > 500 and rules["conflicting_label"] > 1000
    assert set(rules) == {"duplicate_text", "near_duplicate", "conflicting_label"}
    assert r.encoding_flags["mojibake"] > 3000 and r.rows_accepted + r.rows_quarantined == 38158
    assert set(r.class_counts) == {"negative", "neutral", "positive"}
    json.loads(r.to_json())

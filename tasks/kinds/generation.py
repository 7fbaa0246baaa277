"""Text generation: supervised fine-tuning of a causal (instruction) LM to write answers (transformers'
`text-generation`).

Sources: JSONL/Parquet/CSV with a prompt and a response column (data.prompt_column, data.response_column), or a
messages column of chat turns (data.messages_column: [{role, content}, ...], the last turn the assistant's answer);
the embedded default is WNUT-16 tweets as entity extraction to JSON on SmolLM2-135M-Instruct
(generation_default.py). Canonical rows: `messages` (the turns before the answer, a JSON string) and `response`.
Rules: bad turns, bad roles, blank prompt, blank response, a prompt that leaves no room for an answer at
preprocess.max_length, an answer that would be cut, duplicates; leakage is checked on the normalised prompt.
Encoding: the model's chat template (chat.py; a plain one for a tokenizer without), the loss on the answer's tokens
only (splits.CausalSplit). Validation: teacher-forced loss. Evaluation: greedy generation (left padding, KV cache)
scored by answer_scores.py; the baseline is the base model itself, zero-shot, on the same prompts.
Drift: the prompt's text and descriptors, the answer's length, cut-off and empty answers, the production model's
perplexity on the prompts, and prompt embeddings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.files.tables import read_table
from tasks.kinds import chat
from tasks.kinds import text_quality as quality
from tasks.kinds.base import (BadInput, Kind, Predicted, RequiredColumn, number_rows, profile_tail, read_input_table,
                              rename_to_canonical)
from tasks.kinds.tokenizing import token_profile

MESSAGES, RESPONSE = "messages", "response"
ENCODED = ("input_ids", "response_start", "length")
FINISH, ANSWER_TOKENS = "finish", "answer_tokens"


def _cell(value) -> Optional[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def split_conversation(value) -> tuple[object, Optional[str]]:
    """A messages cell as (turns before the answer as JSON, the answer): the last turn is the answer when it is the
    assistant's. A cell that does not parse is kept as it is, for the rules to name."""
    try:
        turns = chat.as_turns(value)
    except chat.BadTurns:
        return (value if isinstance(value, str) else json.dumps(value, default=str)), None
    if turns[-1]["role"] == "assistant":
        return chat.dumps(turns[:-1]) if len(turns) > 1 else "[]", turns[-1]["content"]
    return chat.dumps(turns), None


def parse_cell(value) -> tuple[Optional[list[dict]], str]:
    """A messages cell as its turns, or None and why it is not a list of turns."""
    if value is None:
        return None, "no prompt"
    try:
        return chat.as_turns(value), ""
    except chat.BadTurns as exc:
        return None, str(exc)


class TextGenerationKind(Kind):
    name = "text-generation"
    columns = (MESSAGES, RESPONSE)
    label_column = RESPONSE
    min_classes = 1  # an answer per row; there are no classes
    auto_class = "AutoModelForCausalLM"
    peft_task = "CAUSAL_LM"
    baseline_name = "baseline_zero_shot_base"
    baseline_description = "the base model itself, zero-shot, on the same prompts"
    encoded_columns = ENCODED
    objective = "generation"
    cpu_batch_size = 8
    lora_targets = "all-linear"  # every Linear but the output layer, as QLoRA adapts LLMs (q/v only learns slower)
    val_metrics = ("loss",)  # teacher-forced: a generation pass per epoch would cost more than the epoch
    headline = "answer_f1"
    gate_metrics = ("answer_f1", "exact_match", "chrf", "rouge_l")

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        if cfg.path:
            return self._read(Path(cfg.path), cfg, cfg.format)
        from tasks.kinds.generation_default import default_generation_frame

        return self.to_canonical(default_generation_frame(), cfg.model_copy(update={"messages_column": MESSAGES}))

    def read_file(self, path: Path, cfg) -> pd.DataFrame:
        return self._read(path, cfg, "auto")

    def _read(self, path: Path, cfg, fmt: str) -> pd.DataFrame:
        return self.to_canonical(read_table(path, fmt, cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows), cfg)

    def to_canonical(self, df: pd.DataFrame, cfg) -> pd.DataFrame:
        """messages + response from a messages column (preferred when present) or a prompt and a response column;
        missing columns stay missing so validate can name them."""
        source_columns = [str(c) for c in df.columns]
        if cfg.messages_column in df.columns:
            pairs = [split_conversation(v) for v in df[cfg.messages_column]]
            df = rename_to_canonical(df.drop(columns=[cfg.messages_column]), {cfg.response_column: RESPONSE},
                                     also=(MESSAGES,))
            df[MESSAGES] = [m for m, _ in pairs]
            answers = pd.Series([a for _, a in pairs], index=df.index, dtype=object)
            df[RESPONSE] = answers.where(answers.notna(), df[RESPONSE]) if RESPONSE in df.columns else answers
        elif cfg.prompt_column in df.columns:
            prompts = df[cfg.prompt_column].map(_cell)
            df = rename_to_canonical(df.drop(columns=[cfg.prompt_column]), {cfg.response_column: RESPONSE},
                                     also=(MESSAGES,))
            df[MESSAGES] = prompts.map(lambda p: None if p is None else chat.dumps([{"role": "user", "content": p}]))
        if RESPONSE in df.columns:
            df[RESPONSE] = df[RESPONSE].map(_cell)
        df = number_rows(df.reset_index(drop=True))
        df.attrs.update(rows_read=len(df), removed_by={}, source_columns=source_columns)
        return df

    def source_label(self, cfg) -> str:
        if cfg.path:
            return str(cfg.path)
        from tasks.kinds.generation_default import DEFAULT_DATA_LABEL

        return DEFAULT_DATA_LABEL

    def required_columns(self, cfg, labelled: bool) -> list[RequiredColumn]:
        wanted = [RequiredColumn(MESSAGES, "data.prompt_column", cfg.prompt_column)]
        return wanted + [RequiredColumn(RESPONSE, "data.response_column", cfg.response_column)] if labelled else wanted

    def row_rules(self, df, data_cfg, cfg, allowed, labelled, mark, budget=None) -> dict:
        parsed = df[MESSAGES].map(parse_cell)  # each cell read once: (turns or None, what is wrong with it)
        turns, problems = parsed.map(lambda p: p[0]), parsed.map(lambda p: p[1])
        mark(problems != "", "bad_messages", "column " + repr(data_cfg.messages_column) + " / " +
             repr(data_cfg.prompt_column) + ": " + problems)
        roles = turns.map(lambda t: "" if t is None else chat.role_problem(t, labelled) or "")
        mark(roles != "", "bad_role", roles)
        prompt = turns.map(lambda t: "" if t is None else next(
            (turn["content"] for turn in reversed(t) if turn["role"] == "user"), ""))
        mark(prompt.str.strip() == "", "blank_prompt", "the prompt (the last user turn) is empty")
        response = (df[RESPONSE] if RESPONSE in df.columns else pd.Series(None, index=df.index, dtype=object))
        if labelled:
            mark(response.map(lambda r: r is None or not str(r).strip()), "blank_response",
                 f"no answer in column {data_cfg.response_column!r} (or no final assistant turn)")
        long_rows = 0
        if budget is not None:
            long_rows = self._length_rules(df, turns, response if labelled else None, budget, mark)
        if cfg.drop_duplicates:
            key = df[MESSAGES].astype(str) + "\x00" + response.astype(str)
            mark.duplicates(quality.normalize(key), "duplicate_row",
                            "same prompt and answer as row {first} (after normalizing case, whitespace, URLs and "
                            "@handles)")
        return {"token_checked_rows": int(len(df)) if budget is not None else 0, "over_length": long_rows}

    def _length_rules(self, df, turns: pd.Series, response: Optional[pd.Series], budget, mark) -> int:
        """Token counts under the model's chat template: a prompt that leaves no room for an answer, and (labelled)
        a conversation longer than preprocess.max_length, whose answer training would cut."""
        from tasks.kinds import resolve_model

        tokenizer = self.load_processor(resolve_model(budget.model, self))
        live = mark.live & turns.notna()
        prompt_len = pd.Series(0, index=df.index)
        total = pd.Series(0, index=df.index)
        for i in df.index[live]:
            t = turns[i]
            if response is not None and response[i] is not None:
                full, start = chat.conversation_ids(tokenizer, t, str(response[i]))
                prompt_len[i], total[i] = start, len(full)
            else:
                prompt_len[i] = len(chat.prompt_ids(tokenizer, t))
        limit = budget.max_length
        no_room, too_long = live & (prompt_len >= limit - 1), live & (total > limit)
        mark(no_room, "no_room", "the prompt is " + prompt_len.astype(str) + f" tokens in the chat template: "
             f"preprocess.max_length={limit} leaves no room for an answer")
        mark(too_long, "long_response", "prompt and answer are " + total.astype(str) + f" tokens: "
             f"preprocess.max_length={limit} would cut the answer")
        return int((no_room | too_long).sum())

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        out = accepted.assign(**{MESSAGES: accepted[MESSAGES].map(lambda v: chat.dumps(chat.as_turns(v)))})
        if labelled:
            out[RESPONSE] = out[RESPONSE].astype(str).str.strip()
        return out

    def class_values(self, df: pd.DataFrame) -> pd.Series:
        return pd.Series("answer", index=df.index)  # one "class": the rules ask for answers, not classes

    def display(self, df: pd.DataFrame) -> pd.DataFrame:
        response = df[RESPONSE] if RESPONSE in df.columns else pd.Series("", index=df.index)
        return pd.DataFrame({"prompt": df[MESSAGES].map(lambda v: "" if v is None else chat.last_user_text(v)),
                             RESPONSE: response.astype("string").fillna("")})

    def profile_report(self, accepted: pd.DataFrame) -> dict:
        prompts = accepted[MESSAGES].map(chat.last_user_text)
        out = {"length": {"prompt": quality.length_profile(prompts)}}
        if RESPONSE in accepted.columns:
            out["length"]["response"] = quality.length_profile(accepted[RESPONSE].astype(str))
        return out

    # --- preprocess --------------------------------------------------------------------------------------------
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        return quality.normalize(df[MESSAGES].astype(str))

    def strata(self, df: pd.DataFrame) -> pd.Series:
        """Answer length in thirds: short (often "[]" or one word), middle and long answers spread over the splits."""
        if RESPONSE not in df.columns or len(df) < 3:
            return pd.Series("all", index=df.index)
        length = df[RESPONSE].astype(str).str.len().rank(method="first")
        return pd.qcut(length, 3, labels=["short", "middle", "long"]).astype(str)

    def label_set(self, df: pd.DataFrame) -> list[str]:
        return []

    def augment(self, train: pd.DataFrame, cfg, seed: int) -> pd.DataFrame:
        return train.assign(augmented=False)

    def encode(self, part: pd.DataFrame, processor, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        table = part.reset_index(drop=True)
        ids, starts = [], []
        for messages, response in zip(table[MESSAGES], table[RESPONSE]):
            full, start = chat.conversation_ids(processor, chat.as_turns(messages), str(response))
            ids.append(np.asarray(full[:cfg.max_length], dtype=np.int32))
            starts.append(min(start, cfg.max_length))
        lengths = np.array([len(x) for x in ids], dtype=np.int32)
        table = table.assign(input_ids=ids, response_start=np.array(starts, dtype=np.int32), length=lengths)
        report = token_profile(lengths, cfg.max_length)
        if len(lengths):
            report["response_tokens_p50"] = float(np.percentile(lengths - np.array(starts), 50))
        return table, report

    # --- model -------------------------------------------------------------------------------------------------
    def default_model(self) -> str:
        from tasks.kinds.generation_default import default_generation_model

        return str(default_generation_model())

    def default_model_description(self) -> str:
        from tasks.kinds.generation_default import DEFAULT_MODEL_DESCRIPTION, SMOLLM_FILE, source_sha256

        return f"{DEFAULT_MODEL_DESCRIPTION}; source file {Path(SMOLLM_FILE).name} sha256 {source_sha256()}"

    def load_processor(self, path: str):
        from tasks.kinds.tokenizing import load_tokenizer

        return chat.ensure_template(load_tokenizer(path))

    def saved_processor(self, processor, train: pd.DataFrame):
        return processor

    def split(self, frame: pd.DataFrame, processor, train_cfg=None, max_length: Optional[int] = None):
        from tasks.engine.splits import CausalSplit

        if "input_ids" not in frame.columns:
            raise ValueError("text-generation: the engine trains on preprocessed rows (input_ids, response_start)")
        return CausalSplit.from_frame(frame, processor.pad_token_id)

    def validation(self, frame: pd.DataFrame, processor, labels: list[str]):
        """The validation split's teacher-forced loss on the answers (per answer token), and its perplexity."""
        from tasks.engine.generating import token_losses

        split = self.split(frame, processor)

        def validate(model, batch_size: int, device) -> dict:
            nll, counted, _ = token_losses(model, split.input_ids, split.starts, split.pad_id, batch_size, device,
                                           desc="validate")
            loss = float(nll.sum() / max(1, counted.sum()))
            return {"val_loss": loss, "val_perplexity": float(np.exp(min(loss, 50.0)))}

        validate.metric = "loss"
        validate.higher_is_better = False
        return validate

    def truth(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[RESPONSE].astype(str).to_numpy()

    def prompts(self, frame: pd.DataFrame, processor, max_length: Optional[int]) -> list[np.ndarray]:
        """Each row's prompt tokens (generation prompt added); a longer prompt keeps its end, where the question and
        the assistant's turn marker are."""
        from tasks.kinds.tokenizing import model_max_length

        limit = model_max_length(processor, max_length)
        out = []
        for messages in frame[MESSAGES]:
            ids = chat.prompt_ids(processor, chat.as_turns(messages))
            out.append(np.asarray(ids[-limit:], dtype=np.int64))
        return out

    def predict(self, model, processor, frame, labels, batch_size, device, embeddings=False, desc="predict",
                max_length=None) -> Predicted:
        from tasks.engine.generating import generate, token_losses

        n = len(frame)
        if n == 0:
            return Predicted(np.array([], dtype=object), np.zeros((0, 1), np.float32), np.zeros(0, int),
                             extras={FINISH: [], ANSWER_TOKENS: np.zeros(0)})
        prompts = self.prompts(frame, processor, max_length)
        out = generate(model, prompts, processor.pad_token_id, batch_size, device, processor, desc)
        answers = np.array([processor.decode(t, skip_special_tokens=True) for t in out.tokens], dtype=object)
        extras = {FINISH: out.finish, ANSWER_TOKENS: np.array([len(t) for t in out.tokens], dtype=np.float64)}
        if RESPONSE in frame.columns and frame[RESPONSE].notna().all():  # the reference answers' likelihood
            pairs = [chat.conversation_ids(processor, chat.as_turns(m), str(r))
                     for m, r in zip(frame[MESSAGES], frame[RESPONSE])]
            nll, counted, _ = token_losses(model, [np.asarray(f, dtype=np.int64) for f, _ in pairs],
                                           [s for _, s in pairs], processor.pad_token_id, batch_size, device,
                                           desc=f"{desc} references")
            extras.update(reference_nll=nll, reference_tokens=counted)
        emb = None
        if embeddings:  # drift: the model's perplexity on the prompts, and their embeddings, in one pass
            nll, counted, emb = token_losses(model, prompts, [1] * n, processor.pad_token_id, batch_size, device,
                                             desc=f"{desc} prompts", hidden=True)
            extras["prompt_perplexity"] = np.exp(np.minimum(nll / np.maximum(counted, 1), 50.0))
        return Predicted(answers, out.mean_token_prob[:, None], np.arange(n), emb, extras=extras)

    def unit_truth(self, frame: pd.DataFrame, predicted: Predicted) -> np.ndarray:
        return self.truth(frame)

    def scores(self, y_true, y_pred, labels) -> dict:
        from tasks.kinds.answer_scores import answer_scores

        return answer_scores(np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object))

    def diagnostics(self, test, predicted, labels, cfg):
        """Eval loss and perplexity of the reference answers, and what the answers look like (length, cut off,
        empty); no classes, so no calibration or confusion matrix."""
        from tasks.kinds.diagnostics import Diagnostics, Plot

        extras = predicted.extras or {}
        model = answer_shape(predicted)
        plots = []
        if "reference_nll" in extras:
            loss = float(extras["reference_nll"].sum() / max(1, extras["reference_tokens"].sum()))
            model.update(eval_loss=loss, perplexity=float(np.exp(min(loss, 50.0))))
            # the answers' lengths against the references': cut-off, rambling or terse answers stand out
            plots.append(Plot("answer_length", "scatter", "Answer length against the reference's, tokens (test split)",
                              [{"reference_tokens": int(r), "answer_tokens": int(a)} for r, a in
                               zip(extras["reference_tokens"], extras.get(ANSWER_TOKENS, []))],
                              "reference_tokens", "answer_tokens"))
        return Diagnostics(model=model, report={}, plots=plots)

    def baseline(self, train, test, labels, cfg, seed, base_model, generation=None) -> np.ndarray:
        """The base model, zero-shot, on the same prompts with the candidate's generation settings."""
        from tasks.engine.device import pick_device
        from tasks.engine.modeling import generation_config_for, load_classifier
        from tasks.kinds import resolve_model

        path = resolve_model(base_model, self)
        processor = self.load_processor(path)
        model = load_classifier(path, self.auto_class)
        model.generation_config = generation_config_for(model, processor, generation)
        device = pick_device()
        # without the references: the baseline's answers are all that is scored, so no reference pass
        return self.predict(model.to(device), processor, test.drop(columns=[RESPONSE]), labels, cfg.batch_size,
                            device, desc="baseline").rows

    # --- serving and monitoring --------------------------------------------------------------------------------
    def read_predict_input(self, path: Path, column: Optional[str]) -> pd.DataFrame:
        """Prompts (a prompt column, or --column) or chat turns (a messages column) to answer; a file's messages
        are checked as a request's are (BadInput naming the row)."""
        df, found = read_input_table(path, [column] if column else ["prompt", MESSAGES, "text"], "prompt or messages")
        if not len(df.columns):
            return pd.DataFrame({MESSAGES: pd.Series(dtype=str)})
        if found == MESSAGES:
            values = [chat.dumps(self.request_input(v, f"{path}: row {i}: {MESSAGES}", None))
                      for i, v in enumerate(df[MESSAGES], start=1)]
        else:
            values = [chat.dumps([{"role": "user", "content": str(v)}]) for v in df[found]]
        aside = "__tuneline_user_messages"  # a user's own messages column while a prompt column is answered
        out = df.rename(columns={MESSAGES: aside}) if found != MESSAGES else df.copy()
        out[MESSAGES] = values
        out.attrs.update(internal=[] if found == MESSAGES else [MESSAGES],
                         restore={aside: MESSAGES} if found != MESSAGES and MESSAGES in df.columns else {})
        return out

    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict:
        extras = predicted.extras or {}
        return {"generated_text": list(predicted.rows), "finish_reason": list(extras.get(FINISH, [])),
                "answer_tokens": [int(x) for x in extras.get(ANSWER_TOKENS, [])]}

    def request_input(self, value, field: str, limits) -> list[dict]:
        """A prompt (a string) or chat turns ending with a user turn; within serve.max_text_chars in all."""
        if isinstance(value, str):
            turns = [{"role": "user", "content": value}]
        elif isinstance(value, list):
            try:
                turns = chat.as_turns(value)
            except chat.BadTurns as exc:
                raise BadInput(422, f"{field}: {exc}") from None
            problem = chat.role_problem(turns, with_answer=False)
            if problem:
                raise BadInput(422, f"{field}: {problem}")
        else:
            raise BadInput(422, f"{field}: a prompt (a JSON string) or chat turns ([{{role, content}}, ...]) are "
                                f"expected, got {type(value).__name__}")
        chars = sum(len(t["content"]) for t in turns)
        if limits is not None and chars > limits.max_text_chars:
            raise BadInput(413, f"{field}: {chars:,} characters exceeds serve.max_text_chars={limits.max_text_chars:,}")
        return turns

    def request_rows(self, inputs: list) -> pd.DataFrame:
        return pd.DataFrame({MESSAGES: [chat.dumps(t) for t in inputs]})

    def answers(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> list[dict]:
        """The answer, why it ended ("stop" or "length": cut at max_new_tokens) and its mean token probability."""
        extras = predicted.extras or {}
        return [{"generated_text": str(text), "finish_reason": finish, "answer_tokens": int(tokens),
                 "score": float(p[0])}
                for text, finish, tokens, p in zip(predicted.rows, extras.get(FINISH, []),
                                                   extras.get(ANSWER_TOKENS, []), predicted.unit_probs)]

    def write_batch(self, rows: pd.DataFrame, path: Path, cfg) -> Path:
        """The rows' conversations in the configured messages column (the answer as the last, assistant, turn)."""
        from tasks.files.tables import write_parquet

        def conversation(messages, response) -> str:
            turns = chat.as_turns(messages)
            return chat.dumps(turns + ([{"role": "assistant", "content": str(response)}] if response else []))

        responses = rows[RESPONSE] if RESPONSE in rows.columns else pd.Series(None, index=rows.index)
        return write_parquet(pd.DataFrame({cfg.messages_column: [conversation(m, r) for m, r in
                                                                 zip(rows[MESSAGES], responses)]}), path)

    def profile(self, predicted, frame, labels, processor) -> pd.DataFrame:
        from tasks.kinds.text import descriptors

        prompts = pd.Series(frame[MESSAGES].map(chat.last_user_text).astype(str).to_numpy())
        extras = predicted.extras or {}
        finish = np.asarray(extras.get(FINISH, []), dtype=object)
        tokens = np.asarray(extras.get(ANSWER_TOKENS, []), dtype=np.float64)
        out = pd.concat([prompts.rename("text").to_frame(), descriptors(prompts, processor)], axis=1)
        out["prompt_perplexity"] = extras.get("prompt_perplexity", np.full(len(frame), np.nan))
        out["answer_cut_off"] = (finish == "length").astype(float)
        out["answer_empty"] = (tokens == 0).astype(float)
        gold = frame[RESPONSE].astype(str).str.len().astype(float) if RESPONSE in frame.columns else None
        # predicted_label: the answer's length in tokens (numeric, as a regression's score is); label: the reference
        # answer's length in characters, so a labelled batch's answers are compared in the live scores, not here.
        return profile_tail(out, gold, list(tokens), predicted.unit_probs[:, 0] if len(frame) else [],
                            predicted.embeddings)


def answer_shape(predicted: Predicted) -> dict:
    """Share of answers cut at max_new_tokens, share empty, mean length in tokens."""
    extras = predicted.extras or {}
    finish = np.asarray(extras.get(FINISH, []), dtype=object)
    tokens = np.asarray(extras.get(ANSWER_TOKENS, []), dtype=np.float64)
    if not len(tokens):
        return {}
    return {"cut_off_share": float(np.mean(finish == "length")), "empty_share": float(np.mean(tokens == 0)),
            "mean_answer_tokens": float(tokens.mean())}

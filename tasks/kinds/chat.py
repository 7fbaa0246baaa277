"""Conversations for the text-generation kind: reading a cell of chat turns, checking roles, and formatting turns
with the model's own chat template (or a plain, documented one) into token ids whose response part is known.

The chat format is the one the Hugging Face ecosystem uses: a list of {"role": "system" | "user" | "assistant",
"content": text}. A row's turns before its answer are stored as a JSON string (Parquet keeps it as it is); the answer
is the row's `response`.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

ROLES = ("system", "user", "assistant")
# The template a tokenizer without its own chat template gets (GPT-2 and other base models). Each turn is
# "<|role|>\n" + content + "\n"; the answer follows "<|assistant|>\n" and ends with the tokenizer's end-of-text token.
PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


class BadTurns(ValueError):
    """A cell that is not a list of chat turns; the message says what is wrong with it."""


def as_turns(value: Any) -> list[dict]:
    """A cell as a list of {role, content} turns: a JSON string, or a list (Parquet, JSONL) of mappings."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadTurns(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise BadTurns("not a non-empty list of {role, content} turns")
    turns = []
    for n, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise BadTurns(f"turn {n} is not a {{role, content}} mapping")
        if not isinstance(turn["content"], str):
            raise BadTurns(f"turn {n}: content is not a text")
        turns.append({"role": str(turn["role"]), "content": turn["content"]})
    return turns


def role_problem(turns: list[dict], with_answer: bool) -> Optional[str]:
    """Why these turns cannot be a prompt (`with_answer`: followed by an assistant answer), or None."""
    for n, turn in enumerate(turns, start=1):
        if turn["role"] not in ROLES:
            return f"turn {n} has role {turn['role']!r}; roles are {', '.join(ROLES)}"
        if turn["role"] == "system" and n != 1:
            return f"turn {n} is a system turn after the first"
    if turns[-1]["role"] != "user":
        return (f"the last turn before the answer is {turns[-1]['role']!r}, not 'user'" if with_answer else
                f"the last turn is {turns[-1]['role']!r}: a prompt ends with a user turn")
    return None


def dumps(turns: list[dict]) -> str:
    return json.dumps(turns, ensure_ascii=False)


def last_user_text(turns_json: str) -> str:
    """The prompt in words: the last user turn (what drift, the quarantine file and duplicates read)."""
    try:
        turns = as_turns(turns_json)
    except BadTurns:
        return str(turns_json)
    return next((t["content"] for t in reversed(turns) if t["role"] == "user"), "")


def ensure_template(tokenizer) -> Any:
    """The tokenizer with a chat template: its own, else PLAIN_TEMPLATE (saved with the model, so
    `pipeline("text-generation")` formats chats the same way)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_TEMPLATE
    return tokenizer


def prompt_text(tokenizer, turns: list[dict]) -> str:
    return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)


def _encode(tokenizer, text: str) -> list[int]:
    # the template writes any begin-of-text token itself, as apply_chat_template(tokenize=True) reads it
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer, turns: list[dict]) -> list[int]:
    """The prompt's tokens as the model sees them before it answers (the generation prompt added)."""
    return _encode(tokenizer, prompt_text(tokenizer, turns))


def conversation_ids(tokenizer, turns: list[dict], response: str) -> tuple[list[int], int]:
    """The whole conversation's tokens and where the response starts. The prompt is tokenized on its own, exactly
    as generation will see it, and the rest (the answer and its end-of-turn tokens, which the loss covers) after it:
    tokenizing the whole text at once could merge the template's last characters with the answer's first (a
    newline and a word) and train on a prompt the model never sees. A template that rewrites earlier turns when an
    answer follows gets the two texts' shared prefix as the prompt."""
    prompt = prompt_text(tokenizer, turns)
    full = tokenizer.apply_chat_template(turns + [{"role": "assistant", "content": response}], tokenize=False)
    if full.startswith(prompt):
        head = _encode(tokenizer, prompt)
        return head + _encode(tokenizer, full[len(prompt):]), len(head)
    shared = 0
    while shared < min(len(prompt), len(full)) and prompt[shared] == full[shared]:
        shared += 1
    head = _encode(tokenizer, full[:shared])
    return head + _encode(tokenizer, full[shared:]), len(head)

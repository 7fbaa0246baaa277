"""Scores of generated answers against reference answers.

- answer_f1 (the headline): micro F1 over answer items. An answer that parses as a JSON list is a multiset of its
  items (the default data set's entities, [type, text] pairs); any other answer is one item, its normalised text,
  so on plain answers answer_f1 is exact match over the rows whose reference or answer is not empty. A reference
  list and an answer that does not parse share no items.
- exact_match: share of rows whose answer equals the reference after normalisation (JSON: the same items).
- chrf (sacrebleu's chrF, 0-100) and rouge_l (F-measure, rouge-score) on the raw texts: partial credit for free text.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from typing import Optional

import numpy as np

SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, surrounding spaces and final full stop dropped."""
    text = SPACES.sub(" ", unicodedata.normalize("NFKC", str(text)).casefold()).strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def items(answer: str, structured: bool) -> Optional[Counter]:
    """The answer's items: a JSON list's elements (normalised) when `structured`, else the normalised text itself
    (none when it is empty). None: a structured answer that does not parse."""
    if not structured:
        norm = normalise(answer)
        return Counter([norm]) if norm else Counter()
    try:
        value = json.loads(str(answer).strip())
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(value, list):
        return None
    return Counter(normalise(json.dumps(v, ensure_ascii=False, sort_keys=True)) for v in value)


def is_structured(reference: str) -> bool:
    """A reference answer that is a JSON list: its answers are scored item by item."""
    text = str(reference).strip()
    if not text.startswith("["):
        return False
    try:
        return isinstance(json.loads(text), list)
    except (json.JSONDecodeError, ValueError):
        return False


def answer_scores(references: np.ndarray, answers: np.ndarray) -> dict:
    tp = fp = fn = exact = 0
    unparsed = 0
    for reference, answer in zip(references, answers):
        structured = is_structured(reference)
        gold, got = items(reference, structured), items(answer, structured)
        if got is None:
            unparsed += 1
            got = Counter()
            exact += 0
        else:
            exact += gold == got
        shared = sum((gold & got).values())
        tp, fp, fn = tp + shared, fp + sum(got.values()) - shared, fn + sum(gold.values()) - shared
    n = len(references)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0  # nothing to find and nothing found: all right
    return {"answer_f1": float(f1), "answer_precision": float(precision), "answer_recall": float(recall),
            "exact_match": float(exact / n) if n else 0.0, "unparsed_share": float(unparsed / n) if n else 0.0,
            **text_overlap(references, answers)}


def text_overlap(references: np.ndarray, answers: np.ndarray) -> dict:
    """chrF (corpus level, 0-100) and mean ROUGE-L F-measure of the raw texts."""
    if not len(references):
        return {"chrf": 0.0, "rouge_l": 0.0}
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    chrf = CHRF().corpus_score([str(a) for a in answers], [[str(r) for r in references]]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = np.mean([scorer.score(str(r), str(a))["rougeL"].fmeasure for r, a in zip(references, answers)])
    return {"chrf": float(chrf), "rouge_l": float(rouge)}

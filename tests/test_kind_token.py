"""Token classification: tags on each word's first sub-token, seqeval entity scores, bad rows, character spans."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import checks
from tasks.config import DataConfig
from tasks.engine.splits import IGNORE_INDEX
from tasks.kinds.token import entities, words_and_offsets
from tests.conftest import LENIENT, TOKEN


def test_token_tags_go_to_each_words_first_sub_token_only(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = ["Zyxwvut", "flew", "to", "Qqqzzz", "today"]  # made-up words split into several word pieces
    tags = ["B-person", "O", "O", "B-geo-loc", "O"]
    labels = ["B-geo-loc", "B-person", "O"]
    table, _ = TOKEN.encode(pd.DataFrame({"tokens": [words], "tags": [tags]}), tokenizer,
                            type("Cfg", (), {"max_length": 64})(), labels)
    ids, targets, starts = table["input_ids"][0], table["tag_ids"][0], table["word_starts"][0]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert len(tokenizer.tokenize("Zyxwvut")) > 1 and len(tokenizer.tokenize("Qqqzzz")) > 1  # the point of the test
    # The first piece of each word carries the word's tag; every other position is ignored by the loss.
    assert [targets[s] for s in starts] == [labels.index(t) for t in tags]
    assert set(np.delete(targets, starts)) == {IGNORE_INDEX}
    assert [pieces[s] for s in starts] == [tokenizer.tokenize(w)[0] for w in words]
    # The loss really skips them: cross-entropy over the ignored positions alone contributes nothing.
    import torch

    logits = torch.randn(len(targets), len(labels))
    full = torch.nn.functional.cross_entropy(logits, torch.as_tensor(targets, dtype=torch.long),
                                             ignore_index=IGNORE_INDEX)
    firsts = torch.nn.functional.cross_entropy(logits[starts], torch.as_tensor(targets[starts], dtype=torch.long))
    assert torch.isclose(full, firsts)


def test_entity_scores_are_seqevals_on_known_predictions():
    from seqeval.metrics import accuracy_score, classification_report, f1_score

    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-PER"]]
    y_pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O", "O", "B-LOC"]]
    labels = ["B-LOC", "B-ORG", "B-PER", "I-ORG", "I-PER", "O"]
    s = TOKEN.scores(np.array(y_true, dtype=object), np.array(y_pred, dtype=object), labels)
    assert s["entity_f1"] == pytest.approx(f1_score(y_true, y_pred)) == pytest.approx(2 * (1 / 3) * (1 / 4) / (7 / 12))
    assert s["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    report = classification_report(y_true, y_pred, output_dict=True)
    for entity_type in ("PER", "LOC", "ORG"):
        assert s["per_class"][entity_type]["f1-score"] == pytest.approx(report[entity_type]["f1-score"])
    assert s["per_class"]["ORG"]["f1-score"] == 0.0 and s["per_class"]["PER"]["recall"] == 0.5
    assert s["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])


def test_bad_token_rows_are_quarantined_with_row_and_rule(tmp_path):
    src = tmp_path / "ner.conll"
    src.write_text("EU B-ORG\nrejects O\nGerman B-MISC\n\n"      # row 1: fine
                   "Peter B-PER\nBlackburn I-PER\n\n"            # row 2: fine
                   "in O\nLondon I-LOC\n\n"                      # row 3: I- without its B-
                   "Paris B-CITY\nis X-LOC\n\n"                   # row 4: unknown tag
                   "Rome\nis O\n\n"                              # row 5: a token without a tag
                   "EU B-ORG\nrejects O\nGerman B-MISC\n",       # row 6: duplicate of row 1
                   encoding="utf-8")
    cfg = DataConfig(path=str(src))
    out = checks.check(TOKEN.read_source(cfg), cfg, LENIENT, str(src), kind=TOKEN)
    rules = dict(zip(out.quarantine["row"], out.quarantine["rule"]))
    assert rules == {3: "bio_order", 4: "unknown_tag", 5: "length_mismatch", 6: "duplicate_text"}
    details = dict(zip(out.quarantine["row"], out.quarantine["detail"]))
    assert details[3] == ("I-LOC at token 2 follows O (an I- tag must continue a B- or I- of its type) "
                          "(sentence from line 8)")
    assert details[4].startswith("tag 'X-LOC' at token 2 is not a BIO tag") and details[4].endswith("line 11)")
    assert details[5] == "2 tokens but 1 tags (sentence from line 14)"
    assert out.accepted["row"].tolist() == [1, 2] and out.report.class_counts == {"MISC": 1, "ORG": 1, "PER": 1}


def test_token_batch_tags_are_checked_against_the_training_tag_set(tmp_path):
    src = tmp_path / "batch.jsonl"
    pd.DataFrame({"tokens": [["a", "b"], ["c", "d"]], "tags": [["B-PER", "O"], ["B-GPE", "O"]]}).to_json(
        src, orient="records", lines=True)
    cfg = DataConfig()
    out = checks.check(TOKEN.read_file(src, cfg), cfg, LENIENT, str(src), known_labels=["B-PER", "I-PER", "O"],
                         require_classes=False, kind=TOKEN)
    assert dict(zip(out.quarantine["row"], out.quarantine["rule"])) == {2: "unknown_tag"}


def test_entities_carry_character_spans_of_the_raw_text():
    text = "Yesterday Angela Merkel met Acme Corp. in Berlin"
    words, offsets = words_and_offsets(text)
    tags = ["O", "B-person", "I-person", "O", "B-company", "I-company", "O", "O", "B-geo-loc"]
    assert len(words) == len(tags)
    found = entities(words, tags, np.full(len(tags), 0.9), offsets, text)
    assert [(e["entity_group"], e["word"], text[e["start"]:e["end"]]) for e in found] == [
        ("person", "Angela Merkel", "Angela Merkel"), ("company", "Acme Corp", "Acme Corp"),
        ("geo-loc", "Berlin", "Berlin")]

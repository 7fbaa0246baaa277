"""The text-generation kind on tiny random-weight causal LMs (Llama, GPT-2, Qwen2 configs built here): answer
scores, the chat template and the completion-only mask, the row rules, the kind's `auto` settings, and the real
stages (validate, preprocess, train, evaluate, predict) ending in a model that `transformers.pipeline` loads and
that answers as `tuneline predict` does; the model server answers generation requests."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.config import ConfigError, parse_params
from tasks.kinds import chat, get_kind
from tasks.kinds.answer_scores import answer_scores
from tasks.kinds.base import TokenBudget
from tests.conftest import REPO, free_port, start_model_server, stop_process, tiny_params, wait_model_ready

KIND = "text-generation"
COLOURS = ("red", "green", "blue", "black")


def colour_rows(n: int = 48) -> list[dict]:
    """A set a tiny model can memorise: each item's colour (a one-word answer)."""
    return [{"prompt": f"Which colour is item {i}?", "response": COLOURS[i % len(COLOURS)]} for i in range(n)]


def build_decoder(family: str, out: Path) -> Path:
    from tests.tiny_families import build_text_model

    texts = [f"{r['prompt']} {r['response']}" for r in colour_rows(200)] * 3
    return build_text_model(family, out, texts + ["user assistant system"] * 20)


@pytest.fixture(scope="module")
def llama_dir(tiny_decoder_dir) -> Path:
    return tiny_decoder_dir


# --- scores -------------------------------------------------------------------------------------------------------

def test_answer_scores_count_json_items_and_plain_answers():
    refs = np.array(['[["person", "Anna"], ["geo-loc", "Paris"]]', "[]", '[["company", "ACME"]]'], dtype=object)
    got = np.array(['[["person", "anna"]]', "[]", "ACME is a company"], dtype=object)  # last: does not parse
    s = answer_scores(refs, got)
    assert s["answer_precision"] == 1.0 and s["answer_recall"] == pytest.approx(1 / 3)
    assert s["answer_f1"] == pytest.approx(0.5) and s["exact_match"] == pytest.approx(1 / 3)
    assert s["unparsed_share"] == pytest.approx(1 / 3)
    plain = answer_scores(np.array(["Paris.", "blue"], dtype=object), np.array(["paris", "red"], dtype=object))
    assert plain["exact_match"] == 0.5 and plain["answer_f1"] == 0.5 and 0 < plain["chrf"] < 100
    assert answer_scores(np.array(["[]"], dtype=object), np.array(["[]"], dtype=object))["answer_f1"] == 1.0


# --- chat template and the loss mask ---------------------------------------------------------------------------------

def test_plain_template_and_the_loss_covering_the_answer_only(llama_dir):
    from tasks.engine.splits import CausalSplit

    kind = get_kind(KIND)
    tokenizer = kind.load_processor(str(llama_dir))
    assert tokenizer.chat_template == chat.PLAIN_TEMPLATE  # the tiny tokenizer has none of its own
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which colour is item 3?"}]
    text = tokenizer.apply_chat_template(turns + [{"role": "assistant", "content": "black"}], tokenize=False)
    assert text == "<|system|>\nBe brief.\n<|user|>\nWhich colour is item 3?\n<|assistant|>\nblack</s>\n"
    frame = pd.DataFrame({"messages": [chat.dumps(turns)], "response": ["black"]})
    table, _ = kind.encode(frame, tokenizer, parse_params({}).preprocess, [])
    split = CausalSplit.from_frame(table, tokenizer.pad_token_id)
    inputs, targets = split.collate(np.array([0]))
    counted = targets[0][targets[0] != -100].tolist()
    assert tokenizer.decode(counted) == "black</s>\n"  # the answer and its end of turn: nothing of the prompt
    ids = inputs["input_ids"][0].tolist()
    start = int(table["response_start"][0])
    assert tokenizer.decode(ids[:start]).endswith("<|assistant|>\n") and targets[0][:start - 1].eq(-100).all()


def test_a_model_s_own_chat_template_is_the_one_used(llama_dir, tmp_path):
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(llama_dir)
    own.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% if m['role'] == 'assistant' %}"
                         "{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}[assistant] "
                         "{% endif %}")
    own.save_pretrained(tmp_path / "tok")
    tokenizer = get_kind(KIND).load_processor(str(tmp_path / "tok"))
    full, start = chat.conversation_ids(tokenizer, [{"role": "user", "content": "item 1?"}], "green")
    assert tokenizer.decode(full[:start]) == "[user] item 1?\n[assistant] "  # exactly what generation sees
    assert tokenizer.decode(full[start:]) == "green</s>\n"


# --- the data-quality gate -------------------------------------------------------------------------------------------

def test_bad_rows_are_quarantined_naming_row_and_rule(llama_dir, tmp_path):
    from tasks.checks import check

    good = [{"messages": json.dumps([{"role": "user", "content": r["prompt"]},
                                     {"role": "assistant", "content": r["response"]}])} for r in colour_rows(24)]
    bad = [
        {"messages": "not json"},                                                         # row 25
        {"messages": json.dumps([{"role": "bot", "content": "hi"},
                                 {"role": "assistant", "content": "x"}])},               # row 26
        {"messages": json.dumps([{"role": "user", "content": "  "},
                                 {"role": "assistant", "content": "x"}])},               # row 27
        {"messages": json.dumps([{"role": "user", "content": "no answer"}])},          # row 28
        {"messages": json.dumps([{"role": "user", "content": "item " * 40},
                                 {"role": "assistant", "content": "red"}])},             # row 29
        {"messages": json.dumps([{"role": "user", "content": "Which colour?"},
                                 {"role": "assistant", "content": "red " * 30}])},       # row 30
        good[0],                                                                          # row 31
    ]
    path = tmp_path / "chats.jsonl"
    pd.DataFrame(good + bad).to_json(path, orient="records", lines=True)
    params = parse_params({"task": {"kind": KIND}, "data": {"path": str(path)}, "preprocess": {"max_length": 40}})
    kind = get_kind(KIND)
    outcome = check(kind.read_source(params.data), params.data, params.validate_, str(path), kind=kind,
                    budget=TokenBudget(str(llama_dir), 40))
    q = outcome.quarantine.set_index("row")
    assert dict(q["rule"]) == {25: "bad_messages", 26: "bad_role", 27: "blank_prompt", 28: "blank_response",
                               29: "no_room", 30: "long_response", 31: "duplicate_row"}
    assert "not valid JSON" in q.loc[25, "detail"] and "'bot'" in q.loc[26, "detail"]
    assert "preprocess.max_length=40" in q.loc[29, "detail"] and "row 1" in q.loc[31, "detail"]
    assert outcome.report.rows_accepted == 24


def test_auto_settings_follow_the_kind_and_head_only_is_refused():
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    text = parse_params(shipped)
    shipped["task"]["kind"] = KIND
    gen = parse_params(shipped)
    assert (text.train.strategy, text.preprocess.max_length) == ("full", 64)
    assert (gen.train.strategy, gen.preprocess.max_length, gen.train.max_epochs) == ("lora", 256, 2)
    shipped["train"]["strategy"] = "head"
    with pytest.raises(ConfigError, match="train.strategy head: text-generation"):
        parse_params(shipped)


# --- the real stages on tiny models -----------------------------------------------------------------------------

def run_stages(root: Path, model_dir: Path, **train) -> tuple:
    """validate, preprocess, train, evaluate on the colour set, as the DVC stages call them."""
    from tasks.stages import evaluate, preprocess, train as train_stage, validate

    source = root / "colours.jsonl"
    pd.DataFrame(colour_rows()).to_json(source, orient="records", lines=True)
    params = parse_params(tiny_params(model_dir, task={"kind": KIND}, data={"path": str(source)},
                                      preprocess={"max_length": 32, "val_size": 0.15, "test_size": 0.15},
                                      train={"strategy": "full", "epochs": 25, "max_epochs": None, "batch_size": 8,
                                             "learning_rate": 5e-3, "early_stopping_patience": 25, **train},
                                      generate={"max_new_tokens": 4}))
    kind = get_kind(KIND)
    kind.read_source(params.data).to_parquet(root / "raw.parquet")
    validate.run(params.data, params.validate_, root / "raw.parquet", root / "ok.parquet", root / "q.csv",
                 root / "v.json", str(source), kind, TokenBudget(params.train.model, params.preprocess.max_length))
    preprocess.run(params.preprocess, params.train.model, root / "ok.parquet", root / "processed", kind=kind)
    result = train_stage.run(params.train, root / "processed", root / "model", root / "train", kind=kind,
                             generation=params.generate)
    metrics = evaluate.run(params.evaluate, root / "processed", root / "model", root / "metrics.json",
                           base_model=params.train.model, kind=kind, generation=params.generate, precision="fp32")
    return params, result, metrics


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_stages_train_a_causal_lm_that_pipeline_loads_and_answers_like_predict(family, tmp_path, request):
    from transformers import pipeline

    from tasks.stages import predict

    model_dir = (request.getfixturevalue("llama_dir") if family == "llama" else
                 build_decoder(family, tmp_path / "base"))
    _, result, metrics = run_stages(tmp_path, model_dir)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses  # the loss falls on a set the model can memorise
    assert result.val_metric == "loss" and "val_perplexity" in result.history[0]
    assert {"answer_f1", "exact_match", "chrf", "rouge_l", "eval_loss", "perplexity"} <= set(metrics["model"])
    assert metrics["baseline_name"] == "baseline_zero_shot_base" and "answer_f1" in metrics["baseline_zero_shot_base"]
    assert metrics["model"]["answer_f1"] > metrics["baseline_zero_shot_base"]["answer_f1"]

    prompts = [f"Which colour is item {i}?" for i in (1, 2, 5, 7)] + ["Something else entirely?"]
    pd.DataFrame({"id": range(len(prompts)), "prompt": prompts}).to_json(tmp_path / "in.jsonl", orient="records",
                                                                       lines=True)
    predict.run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "model", precision="fp32")
    out = pd.read_json(tmp_path / "out.jsonl", lines=True, dtype=False)
    assert list(out.columns) == ["id", "prompt", "generated_text", "finish_reason", "answer_tokens"]
    generator = pipeline("text-generation", model=str(tmp_path / "model"))
    piped = [generator([{"role": "user", "content": p}])[0]["generated_text"][-1]["content"] for p in prompts]
    assert piped == list(out["generated_text"])  # the saved generation_config: greedy, max_new_tokens 4, same end


def test_lora_adapter_save_loads_and_answers(tmp_path, llama_dir):
    from tasks.inference import Predictor

    _, result, metrics = run_stages(tmp_path, llama_dir, strategy="lora", epochs=2,
                                    lora={"save": "adapter", "r": 4, "alpha": 8})
    assert (tmp_path / "model" / "adapter_config.json").exists()
    assert (tmp_path / "model" / "generation_config.json").exists()
    predictor = Predictor(tmp_path / "model", precision="fp32")
    assert predictor.model.generation_config.max_new_tokens == 4
    assert len(predictor.answer(pd.DataFrame({"messages": [chat.dumps([{"role": "user", "content": "hi"}])]}))) == 1


@pytest.mark.integration
def test_model_server_generates_answers_like_predict(tmp_path, llama_dir):
    from tasks.registry.store import Registry
    from tasks.stages import predict

    run_stages(tmp_path, llama_dir, epochs=3)
    root = tmp_path / "project"
    registry = Registry.of_project(root)
    registry.promote(tmp_path / "model", {"version": 1, "decision": {"promoted": True}}, "card")
    params = tiny_params(llama_dir, task={"kind": KIND}, inference={"precision": "fp32"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prompts = ["Which colour is item 2?", "Which colour is item 9?"]
    pd.DataFrame({"prompt": prompts}).to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    predict.run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", registry.production, precision="fp32")
    expected = pd.read_json(tmp_path / "out.jsonl", lines=True, dtype=False)
    port, log = free_port(), tmp_path / "server.log"
    server = start_model_server(root, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_model_ready(url, server, log)
        turns = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompts[0]}]]
        answered = httpx.post(f"{url}/predict", json={"inputs": prompts + turns}, timeout=60)
        assert answered.status_code == 200, answered.text
        answers = answered.json()["predictions"]
        assert [a["generated_text"] for a in answers[:2]] == list(expected["generated_text"])
        assert [a["finish_reason"] for a in answers[:2]] == list(expected["finish_reason"])
        assert set(answers[2]) == {"generated_text", "finish_reason", "answer_tokens", "score"}
        bad = httpx.post(f"{url}/predict", json={"inputs": [[{"role": "wizard", "content": "x"}]]}, timeout=30)
        assert bad.status_code == 422 and "inputs[0]: turn 1 has role 'wizard'" in bad.json()["error"]
        last = httpx.post(f"{url}/predict", json={"inputs": [[{"role": "user", "content": "x"},
                                                            {"role": "assistant", "content": "y"}]]}, timeout=30)
        assert last.status_code == 422 and "a prompt ends with a user turn" in last.json()["error"]
    finally:
        stop_process(server)


def test_monitoring_profiles_prompts_and_answers_and_feeds_the_retraining_decision(tmp_path, llama_dir):
    from tasks.config import MonitorConfig
    from tasks.inference import Predictor
    from tasks.monitoring import drift
    from tasks.monitoring.decision import decide

    run_stages(tmp_path, llama_dir, epochs=3)
    predictor = Predictor(tmp_path / "model", precision="fp32")
    reference = predictor.profile(pd.DataFrame({"messages": [chat.dumps([{"role": "user", "content": r["prompt"]}])
                                                             for r in colour_rows(60)]}))
    assert {"text", "prompt_perplexity", "answer_cut_off", "answer_empty", "predicted_label", "confidence",
            "emb_0"} <= set(reference.columns)
    assert (reference["prompt_perplexity"] > 1).all() and set(reference["answer_cut_off"]) <= {0.0, 1.0}
    stories = pd.DataFrame({"messages": [chat.dumps([{"role": "user", "content": f"Tell a story about dragon {i}"}])
                                         for i in range(60)], "response": ["once upon a time"] * 60})
    current, live = predictor.profile_and_live(stories)
    summary = drift.check(reference, current, tmp_path / "drift.html", live=live)
    assert {"text", "prompt_perplexity"} <= set(summary.drifted) and summary.live["answer_f1"] == 0.0
    decision = decide(summary, MonitorConfig(), 0.5, len(stories), "answer_f1")
    assert decision.retrain and any("live answer-F1 0.0000" in r for r in decision.reasons)

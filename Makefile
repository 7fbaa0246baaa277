# The README's two commands: `make run` (the main job) and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pip's config here names local index folders that may not exist; their warnings are noise.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test test-fast serve stop repro clean-outputs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' 2>&1 | $(QUIET_PIP)
	touch $(STAMP)

install: $(STAMP)

run: install  ## v1 on the airline topic, then a batch of other topics: drift check, retraining, gate (v2)
	tuneline run
	tuneline demo-batch data/incoming/other-topics.csv --rows 1500
	tuneline monitor
	tuneline models

test: install  ## the whole suite: unit, real `dvc repro`, real Prefect server, real-model smoke test
	$(PY) -m pytest

test-fast: install  ## unit tests only
	$(PY) -m pytest -m "not integration and not smoke"

serve: install  ## Prefect server on 127.0.0.1:4200 + the deployments (Ctrl-C stops both)
	tuneline serve

repro: install
	dvc repro

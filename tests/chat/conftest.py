"""Fixtures of the chat tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.upstream_server import serve
from tests.support.vllm_standin import VllmStandin


@pytest.fixture
def vllm_upstream(settings_env: Callable[..., None]) -> Iterator[VllmStandin]:
    """The vLLM stand-in (its own tokenizer, `/tokenize` and a 1,024-token `max_model_len`)
    as the LLM upstream, with a model name of the test's own (the learned ratio is per model)."""
    standin = VllmStandin(model=f"gemma-{uuid.uuid4().hex[:6]}", max_model_len=1024)
    with serve(standin.app()) as url:
        settings_env(LLM_BASE_URL=url + "/v1", LLM_SERVICE="vllm", DEFAULT_MODEL=standin.model,
                     MAX_CONTEXT_TOKENS=str(standin.max_model_len))
        yield standin

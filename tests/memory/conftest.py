"""Fixtures of the memory tests: a long conversation on the scripted upstream."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roleplay.memory.recall import forget_cached
from tests.support.fake_llm import FakeLLM

CONTEXT = 1024
MAX_TOKENS = 64


@pytest.fixture(autouse=True)
def _fresh_memory_cache() -> None:
    """Each test starts with no process copy of any session's episodes."""
    forget_cached()


@pytest.fixture
def memory_llm(fake_upstream: FakeLLM, settings_env: Callable[..., None]) -> FakeLLM:
    """The scripted upstream in a small context, where a few turns fold into a summary."""
    settings_env(MAX_CONTEXT_TOKENS=str(CONTEXT), RECENT_TURNS_TO_KEEP="4",
                 SUMMARY_RETRY_AFTER_S="0", MEMORY_TOKENS="200")
    return fake_upstream

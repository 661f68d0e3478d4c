"""Each upstream dialect (roleplay.llm.dialect) against the stand-ins that mirror the real
vLLM and Ollama (tests/support/vllm_standin.py and ollama_standin.py cite the upstream
sources they copy), over real HTTP: what it sends, how it reads the answers, the model list
and each model's limits, the names it matches, its health probe and the margin it keeps;
and which one `LLM_SERVICE` picks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from roleplay.chat.context_fit import Budget, budget_for
from roleplay.core.settings import get_settings
from roleplay.llm.answers import ModelLimits, StreamChunk, UpstreamModel
from roleplay.llm.client import ChatMessage, CompletionRequest, UpstreamClient
from roleplay.llm.dialect import Ollama, OpenAICompatible, UpstreamDialect, upstream_dialect
from roleplay.llm.sampling import Sampling
from roleplay.llm.wire import ContextOverflow, ProbeDown
from tests.support.ollama_standin import OllamaStandin
from tests.support.standin_tokenizer import tokenize
from tests.support.upstream_server import serve
from tests.support.vllm_standin import VllmStandin

T = TypeVar("T")

MESSAGES = [ChatMessage("system", "You are Mia, a barista."),
            ChatMessage("user", "안녕, 오늘 카페는 어땠어?")]
TUNED = CompletionRequest(model="m", messages=MESSAGES,
                          sampling=Sampling(temperature=0.4, max_tokens=32, top_p=0.9,
                                            stop=("\n\n", "User:")),
                          context_tokens=1024)
PLAIN = CompletionRequest(model="m", messages=MESSAGES)
OLLAMA = Ollama(keep_alive="30m", safety_margin=0.05)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def _chunks(stream: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


def _for(model: str, request: CompletionRequest) -> CompletionRequest:
    return CompletionRequest(model=model, messages=request.messages, sampling=request.sampling,
                             context_tokens=request.context_tokens)


async def _probe(dialect: UpstreamDialect, base: str, model: str) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        await dialect.health_probe(base, model, http.get)()


async def _no_list() -> list[UpstreamModel]:
    raise AssertionError("this dialect's limits do not come from the model list")


@pytest.fixture
def vllm() -> Iterator[tuple[VllmStandin, str]]:
    standin = VllmStandin(max_model_len=1024)
    with serve(standin.app()) as url:
        yield standin, url


@pytest.fixture
def ollama() -> Iterator[tuple[OllamaStandin, str]]:
    standin = OllamaStandin(model="gemma3:latest")
    with serve(standin.app()) as url:
        yield standin, url


def test_llm_service_picks_the_dialect_with_its_settings(settings_env: Callable[..., None]) -> None:
    vllm = upstream_dialect(get_settings())
    assert isinstance(vllm, OpenAICompatible) and vllm.service == "vllm"
    assert vllm.counts_prompts and not vllm.context_per_request and vllm.safety_margin == 0
    settings_env(LLM_SERVICE="ollama", OLLAMA_KEEP_ALIVE="-1", OLLAMA_SAFETY_MARGIN="0.1")
    ollama = upstream_dialect(get_settings())
    assert ollama == Ollama(keep_alive="-1", safety_margin=0.1) and ollama.service == "ollama"
    assert not ollama.counts_prompts and ollama.context_per_request


def test_openai_compatible_payload() -> None:
    """vLLM's ChatCompletionRequest: `max_tokens` (still accepted), `stream_options` only
    when streaming (else a 400), nothing of Ollama's."""
    messages = [{"role": "system", "content": "You are Mia, a barista."},
                {"role": "user", "content": "안녕, 오늘 카페는 어땠어?"}]
    assert OpenAICompatible().payload(TUNED, False) == {
        "model": "m", "messages": messages, "temperature": 0.4, "max_tokens": 32,
        "stream": False, "top_p": 0.9, "stop": ["\n\n", "User:"]}
    assert OpenAICompatible().payload(PLAIN, True) == {
        "model": "m", "messages": messages, "temperature": 0.7, "max_tokens": 512,
        "stream": True, "stream_options": {"include_usage": True}}


def test_ollama_payload() -> None:
    """Ollama's ChatRequest: sampling in `options` (`num_predict`, and `num_ctx` when the
    prompt was planned for one), `keep_alive` as a duration or seconds, truncate and shift off."""
    messages = [{"role": "system", "content": "You are Mia, a barista."},
                {"role": "user", "content": "안녕, 오늘 카페는 어땠어?"}]
    assert OLLAMA.payload(TUNED, True) == {
        "model": "m", "messages": messages, "stream": True,
        "options": {"temperature": 0.4, "num_predict": 32, "num_ctx": 1024, "top_p": 0.9,
                    "stop": ["\n\n", "User:"]},
        "keep_alive": "30m", "truncate": False, "shift": False}
    assert OLLAMA.payload(PLAIN, False) == {
        "model": "m", "messages": messages, "stream": False,
        "options": {"temperature": 0.7, "num_predict": 512},
        "keep_alive": "30m", "truncate": False, "shift": False}
    assert Ollama(keep_alive="-1", safety_margin=0).payload(PLAIN, False)["keep_alive"] == -1.0
    assert Ollama(keep_alive="1h30m", safety_margin=0).payload(PLAIN, False)["keep_alive"] == "1h30m"


def test_vllm_takes_the_payload_and_its_answers_are_read(vllm: tuple[VllmStandin, str]) -> None:
    standin, url = vllm
    client = UpstreamClient(OpenAICompatible(), url + "/v1")
    request = _for(standin.model, TUNED)
    completion = run(client.complete(request))
    assert standin.requests[-1] == OpenAICompatible().payload(request, False)
    assert completion.content == standin.reply and completion.finish_reason == "stop"
    assert completion.model == standin.model
    assert completion.usage.prompt_tokens == standin.accepted[-1]
    assert completion.usage.completion_tokens == len(tokenize(standin.reply))

    chunks = run(_chunks(client.stream(request)))
    assert standin.requests[-1] == OpenAICompatible().payload(request, True)
    *deltas, closing = chunks
    assert "".join(c.delta for c in deltas) == standin.reply and not any(c.done for c in deltas)
    assert closing.done and closing.finish_reason == "stop"
    assert closing.usage is not None and closing.usage.prompt_tokens == standin.accepted[-1]


def test_ollama_takes_the_payload_and_cuts_nothing(ollama: tuple[OllamaStandin, str]) -> None:
    standin, url = ollama
    client = UpstreamClient(OLLAMA, url)
    request = _for(standin.model, TUNED)
    completion = run(client.complete(request))
    seen = standin.chats[-1]
    assert seen.body == OLLAMA.payload(request, False)
    assert seen.kept_messages == seen.sent_messages
    assert completion.content == standin.reply and completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == seen.prompt_eval_count

    *deltas, closing = run(_chunks(client.stream(request)))
    assert standin.chats[-1].body == OLLAMA.payload(request, True)
    assert "".join(c.delta for c in deltas).strip() == standin.reply
    assert closing.done and closing.model == standin.model
    assert closing.usage is not None and closing.usage.prompt_tokens == seen.prompt_eval_count

    tight = CompletionRequest(model=standin.model, messages=MESSAGES, context_tokens=16)
    with pytest.raises(ContextOverflow) as refused:
        run(client.complete(tight))
    assert refused.value.limit == 16 and refused.value.prompt_tokens == seen.prompt_eval_count
    assert standin.chats[-1].kept_messages == standin.chats[-1].sent_messages, "refused, not cut"


def test_vllm_models_and_limits_come_from_its_list(vllm: tuple[VllmStandin, str]) -> None:
    standin, url = vllm
    dialect = OpenAICompatible()
    client = UpstreamClient(dialect, url)
    [model] = run(client.list_models())
    assert (model.id, model.owned_by, model.context_length) == (standin.model, "vllm", 1024)
    assert run(dialect.read_limits(url, standin.model, client.list_models)) == ModelLimits(
        1024, source="vLLM /v1/models max_model_len")
    # Not on the list: llama.cpp's /props is asked, which vLLM does not have (404): unknown.
    assert run(dialect.read_limits(url, "other", client.list_models)) == ModelLimits()


def test_ollama_models_and_limits_come_from_tags_and_show(ollama: tuple[OllamaStandin, str]) -> None:
    standin, url = ollama
    client = UpstreamClient(OLLAMA, url)
    [model] = run(client.list_models())
    assert model.id == "gemma3:latest" and model.context_length is None
    assert model.details["parameter_size"] == "27.4B"
    expected = ModelLimits(131072, True, "Ollama /api/show model_info")
    assert run(OLLAMA.read_limits(url, "gemma3:latest", _no_list)) == expected
    assert run(OLLAMA.read_limits(url, "gemma3", _no_list)) == expected
    assert run(OLLAMA.read_limits(url, "llama3:8b", _no_list)) == ModelLimits(), "404: unknown"
    standin.capabilities = ("completion",)
    assert run(OLLAMA.read_limits(url, "gemma3", _no_list)).vision is False


def test_model_names_match_as_each_upstream_answers_them() -> None:
    listed = {name: UpstreamModel(name) for name in ("gemma3:latest", "qwen3:8b", "gemma-3-27b-it")}
    assert OLLAMA.find("gemma3", listed) is listed["gemma3:latest"]
    assert OLLAMA.find("gemma3:latest", listed) is listed["gemma3:latest"]
    assert OLLAMA.find("qwen3", listed) is None and OLLAMA.find("gemma3:27b", listed) is None
    assert OpenAICompatible().find("gemma-3-27b-it", listed) is listed["gemma-3-27b-it"]
    assert OpenAICompatible().find("gemma3", listed) is None, "no tags outside Ollama"


def test_health_probes(vllm: tuple[VllmStandin, str], ollama: tuple[OllamaStandin, str]) -> None:
    vllm_standin, vllm_url = vllm
    run(_probe(OpenAICompatible(), vllm_url, "any"))
    vllm_standin.engine_dead = True
    with pytest.raises(ProbeDown, match="/health answered HTTP 503"):
        run(_probe(OpenAICompatible(), vllm_url, "any"))

    _, ollama_url = ollama
    run(_probe(OLLAMA, ollama_url, "gemma3:latest"))
    run(_probe(OLLAMA, ollama_url, "gemma3"))
    with pytest.raises(ProbeDown, match=r"'llama3:8b' is not in /api/tags \(ollama pull llama3:8b\)"):
        run(_probe(OLLAMA, ollama_url, "llama3:8b"))
    with pytest.raises(ProbeDown, match="/api/version answered HTTP 404"):
        run(_probe(OLLAMA, vllm_url, "gemma3"))


def test_the_budget_keeps_the_dialects_margin(settings_env: Callable[..., None],
                                              vllm: tuple[VllmStandin, str],
                                              ollama: tuple[OllamaStandin, str]) -> None:
    vllm_standin, vllm_url = vllm
    settings_env(LLM_BASE_URL=vllm_url + "/v1", MAX_CONTEXT_TOKENS="4096")
    assert run(budget_for(vllm_standin.model, get_settings())) == Budget(1024, 1024), "exact"
    ollama_standin, ollama_url = ollama
    settings_env(LLM_BASE_URL=ollama_url, LLM_SERVICE="ollama", MAX_CONTEXT_TOKENS="1024",
                 OLLAMA_SAFETY_MARGIN="0.05")
    assert run(budget_for(ollama_standin.model, get_settings())) == Budget(972, 1024)

"""A prompt's size in the upstream's own tokens, chat template included.

Asked only at the edge of the budget (`context_fit`), so the common turn pays nothing,
and only of a dialect that can count (`UpstreamDialect.counts_prompts`: the
OpenAI-compatible servers). Each of those counts differently, and which one answers is
found once per base URL:

- vLLM: `POST /tokenize` (root path) with `messages` renders the model's chat template
  and answers `count` (vllm/entrypoints/serve/tokenize): one round trip, exact.
- llama.cpp's native server: `POST /apply-template` then `POST /tokenize` with the
  rendered prompt: two round trips, exact.
- llama-cpp-python's server: only `POST /extras/tokenize/count`, on plain text. Each
  message's text is counted (memoised, so a turn counts only its new messages, in
  parallel), plus the template's wrapping, measured once per model from three one-token
  completions whose `usage.prompt_tokens` are compared with the text counts. The
  wrapping depends on the role (ChatML's "assistant" is two tokens, "user" one), so it
  is measured per role. For SmolLM2's template this matches llama-cpp-python's own
  rendering and tokenization exactly (500 random conversations, 0 differences).
- Ollama has no tokenizer endpoint (it does not count): None, and the budget keeps its
  safety margin.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from roleplay.core.errors import ApiError
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.client import ChatMessage, llm_client
from roleplay.llm.dialect import upstream_dialect
from roleplay.llm.wire import http_holder, upstream_call

logger = logging.getLogger("roleplay.llm.prompt_counter")

CountRoute = Literal["vllm", "llama.cpp", "llama-cpp-python", "none"]
"""Which of the OpenAI-compatible servers' ways to count the server at a base URL has."""
NAME = "LLM upstream (tokenizer)"
TEXT_CACHE = 8192


@dataclass(frozen=True)
class TemplateCost:
    """llama-cpp-python: prompt tokens = fixed (the first, system, message's wrapping and
    the generation prompt) + each later message's wrapping by role + Σ text tokens."""

    fixed: int
    user: int
    assistant: int

    def wrapping(self, messages: Sequence[ChatMessage]) -> int:
        return self.fixed + sum(self.assistant if m.role == "assistant" else self.user
                                for m in messages[1:])


_routes: dict[str, CountRoute] = {}
_template_costs: dict[tuple[str, str], TemplateCost] = {}
_text_counts: OrderedDict[tuple[str, str], int] = OrderedDict()


async def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    http = await http_holder.get()
    async with upstream_call(NAME):
        return await http.post(url, json=body)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return list(messages)


async def _vllm_count(base: str, model: str, messages: Sequence[ChatMessage]) -> int | None:
    body = _json_object(await _post(f"{base}/tokenize", {
        "model": model, "messages": _messages(messages), "add_generation_prompt": True}))
    count = body.get("count")
    return count if isinstance(count, int) else None


async def _llama_cpp_count(base: str, messages: Sequence[ChatMessage]) -> int | None:
    rendered = _json_object(await _post(f"{base}/apply-template",
                                        {"messages": _messages(messages)}))
    prompt = rendered.get("prompt")
    if not isinstance(prompt, str):
        return None
    tokens = _json_object(await _post(f"{base}/tokenize",
                                      {"content": prompt, "add_special": True})).get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


async def _text_tokens(base: str, text: str) -> int | None:
    key = (base, text)
    if key in _text_counts:
        _text_counts.move_to_end(key)
        return _text_counts[key]
    count = _json_object(await _post(f"{base}/extras/tokenize/count", {"input": text})).get("count")
    if not isinstance(count, int):
        return None
    _text_counts[key] = count
    if len(_text_counts) > TEXT_CACHE:
        _text_counts.popitem(last=False)
    return count


async def _texts_tokens(base: str, messages: Sequence[ChatMessage]) -> int | None:
    counts = await asyncio.gather(*(_text_tokens(base, m.content) for m in messages))
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


async def _prompt_tokens_used(base: str, model: str, messages: list[ChatMessage]) -> int | None:
    http = await http_holder.get()
    async with upstream_call(NAME):
        response = await http.post(f"{base}/v1/chat/completions", json={
            "model": model, "messages": _messages(messages), "max_tokens": 1,
            "temperature": 0})
    usage = _json_object(response).get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return prompt if isinstance(prompt, int) else None


async def _template_cost(base: str, model: str) -> TemplateCost | None:
    """The chat template's tokens around each role, from three tiny real prompts."""
    cached = _template_costs.get((base, model))
    if cached:
        return cached
    system, user = ChatMessage("system", "You are Mia."), ChatMessage("user", "Hello there.")
    prompts = ([system, user], [system, user, ChatMessage("user", "Fine.")],
               [system, user, ChatMessage("assistant", "Hi! How are you?"),
                ChatMessage("user", "Fine.")])
    wrapping = []
    for prompt in prompts:
        used, texts = await _prompt_tokens_used(base, model, prompt), await _texts_tokens(base, prompt)
        if used is None or texts is None:
            return None
        wrapping.append(used - texts)
    user_cost = wrapping[1] - wrapping[0]
    cost = TemplateCost(fixed=wrapping[0] - user_cost, user=user_cost,
                        assistant=wrapping[2] - wrapping[0] - user_cost)
    _template_costs[(base, model)] = cost
    logger.info("chat template of %s: %s", model, cost)
    return cost


async def _llama_cpp_python_count(base: str, model: str,
                                  messages: Sequence[ChatMessage]) -> int | None:
    if messages[0].role != "system":
        return None  # some templates add a default system message: not what was measured
    cost = await _template_cost(base, model)
    texts = await _texts_tokens(base, messages)
    if cost is None or texts is None:
        return None
    return cost.wrapping(messages) + texts


async def _count_route(base: str, model: str, messages: Sequence[ChatMessage]) -> CountRoute:
    """Which counting routes the server has; vLLM and llama.cpp share `/tokenize`, but only
    vLLM's takes `messages` and answers `count`."""
    if await _vllm_count(base, model, messages) is not None:
        return "vllm"
    if (await _post(f"{base}/apply-template", {"messages": _messages(messages)})).status_code == 200:
        return "llama.cpp"
    if (await _post(f"{base}/extras/tokenize/count", {"input": "x"})).status_code == 200:
        return "llama-cpp-python"
    return "none"


async def upstream_prompt_tokens(model: str, messages: Sequence[ChatMessage],
                                 settings: Settings | None = None) -> int | None:
    """`messages` as the upstream will count them, or None when it cannot say (a dialect
    that does not count, an unknown server, or a failure: the caller keeps its estimate)."""
    settings = settings or get_settings()
    if not upstream_dialect(settings).counts_prompts or not messages or not settings.llm_base_url:
        return None
    base = llm_client(settings).base_url
    try:
        route = _routes.get(base)
        if route is None:
            route = _routes[base] = await _count_route(base, model, messages)
            logger.info("exact prompt counts at %s: %s", base, route)
        if route == "vllm":
            return await _vllm_count(base, model, messages)
        if route == "llama.cpp":
            return await _llama_cpp_count(base, messages)
        if route == "llama-cpp-python":
            return await _llama_cpp_python_count(base, model, messages)
    except ApiError as error:
        logger.info("could not count the prompt at %s: %s", base, error.message)
    return None

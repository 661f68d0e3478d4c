"""What every call to the LLM upstream shares, whichever its dialect (`llm.dialect`).

The shapes of its answers are `llm.answers`. Here: one pooled httpx client per event
loop with separate connect and read timeouts, and the translation of every upstream
failure into the API's errors: unreachable → 502 `upstream_unavailable`, too slow → 504,
an error answer → 502 carrying the upstream's own message, a prompt refused as too long →
`ContextOverflow` with what the refusal says. Our own connection pool full is a 502
`upstream_unavailable` too, marked (`details.cause` `pool_exhausted`) so the upstream's
breaker does not count it against the upstream.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from roleplay.core import metrics
from roleplay.core.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from roleplay.core.http_pool import pooled_http
from roleplay.ops.failover import POOL_EXHAUSTED


class ProbeDown(Exception):
    """A health probe's upstream answered, and what it answered says it cannot serve."""

    @classmethod
    def answered(cls, response: httpx.Response) -> ProbeDown:
        return cls(f"{response.request.url.path} answered HTTP {response.status_code}")


http_holder = pooled_http(lambda s: (s.llm_connect_timeout_s, s.llm_read_timeout_s),
                          max_connections=200, keepalive=40, http11=True)


def upstream_message(body: bytes, fallback: str) -> str:
    """The human part of an upstream error body, whatever its dialect."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or fallback
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error:
            return str(error)[:500]
    return fallback


_LIMIT = re.compile(r"maximum context length is (\d+) tokens|available context size \((\d+) tokens")
_INPUT = re.compile(r"(\d+) input tokens|request \((\d+) tokens\)|\((\d+) in the messages")
_TOO_LONG = ("longer than the context length", "exceeds the context length",
             "exceeds the available context")


class ContextOverflow(UpstreamError):
    """The upstream refused the prompt as too long for its context: vLLM's 400 (with its
    limit and the prompt's size in its own tokens) or Ollama's (with neither)."""

    def __init__(self, message: str, *, limit: int | None, prompt_tokens: int | None) -> None:
        super().__init__(message, details={"upstream_status": 400})
        self.limit = limit
        self.prompt_tokens = prompt_tokens


def context_overflow(status: int, message: str, name: str) -> ContextOverflow | None:
    """vLLM's "This model's maximum context length is N tokens. However, your request has
    M input tokens" (or its `max_tokens` variant), llama-cpp-python's "... However, you
    requested T tokens (M in the messages, C in the completion)", llama.cpp's "request (M tokens) exceeds
    the available context size (N tokens)", which Ollama passes on with truncate off, or
    Ollama's own "the prompt is longer than the context length" (llm/llama_server.go)."""
    if status != 400:
        return None
    limit, count = _LIMIT.search(message), _INPUT.search(message)
    if limit is None and not any(phrase in message for phrase in _TOO_LONG):
        return None
    return ContextOverflow(f"{name} answered 400: {message}",
                           limit=_first_group(limit), prompt_tokens=_first_group(count))


def _first_group(match: re.Match[str] | None) -> int | None:
    if match is None:
        return None
    return next((int(group) for group in match.groups() if group), None)


@asynccontextmanager
async def upstream_call(name: str) -> AsyncIterator[None]:
    """Maps transport failures of one upstream call to the API's errors."""
    started = time.perf_counter()
    try:
        yield
    except httpx.PoolTimeout:
        # every pooled connection is busy: our own bound, not the upstream failing, so it
        # never counts against the upstream's breaker (`ops.failover`)
        raise UpstreamUnavailable(f"{name}: every connection to it is in use; try again shortly",
                                  details={"cause": POOL_EXHAUSTED}) from None
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise UpstreamUnavailable(f"{name} is unreachable: {error or type(error).__name__}") from None
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{name} did not answer in time") from None
    except httpx.TransportError as error:
        raise UpstreamUnavailable(f"{name} connection failed: {type(error).__name__}") from None
    finally:
        metrics.observe("upstream_seconds", time.perf_counter() - started, upstream=name)


async def raise_for_status(response: httpx.Response, name: str) -> None:
    """An error answer as the API's error: `ContextOverflow` for a prompt refused as too
    long, else a 502 with the upstream's own message."""
    if response.status_code < 400:
        return
    body = await response.aread()
    message = upstream_message(body, f"HTTP {response.status_code}")
    overflow = context_overflow(response.status_code, message, name)
    if overflow is not None:
        raise overflow
    raise UpstreamError(
        f"{name} answered {response.status_code}: {message}",
        details={"upstream_status": response.status_code},
    )


def read_json(response: httpx.Response, name: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UpstreamError(f"{name} answered with something that is not JSON") from None

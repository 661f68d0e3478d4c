"""`core.http_pool`'s direct requests (`post_json`, `stream_json`: the LLM's completions)
against a real HTTP server (uvicorn): on the wire they are what httpx's client sends for
the same call, and they time out, stream and keep their connection as it does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from roleplay.core import request_context
from roleplay.core.http_pool import pooled_http, post_json, stream_json
from tests.support.upstream_server import serve, silent_socket

PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "비 오는 날엔 라떼"}],
           "temperature": 0.7, "stream": False}


def _recording_app(seen: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        assert request.client is not None
        seen.append({"headers": sorted(request.headers.items()),
                     "body": await request.body(), "peer": request.client.port})
        if (await request.json()).get("stream"):
            async def events() -> AsyncIterator[bytes]:
                yield b'data: {"n": 1}\n\n'
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {"choices": [{"message": {"content": "좋아"}}]}

    return app


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with serve(_recording_app(seen)) as url:
        yield f"{url}/v1/chat/completions", seen


HOLDERS: list[Any] = []
"""The holders made here, kept: a holder dropped closes its client (its loop guard is
finalized), as the module-level ones never are."""


def _holder(read_s: float = 5.0, *, http11: bool = True) -> Any:
    holder = pooled_http(lambda _: (5.0, read_s), max_connections=4, keepalive=4, http11=http11)
    HOLDERS.append(holder)
    return holder


def test_a_direct_post_sends_what_the_client_would(upstream: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = upstream

    async def both() -> tuple[httpx.Response, httpx.Response]:
        request_context.begin("6f1c2f64-3f7e-4f43-9d55-1f2b8f0c9a10")
        http = await _holder().get()
        return await http.post(url, json=PAYLOAD), await post_json(http, url, PAYLOAD)

    by_client, direct = asyncio.run(both())
    assert direct.status_code == by_client.status_code == 200
    assert direct.json() == by_client.json() == {"choices": [{"message": {"content": "좋아"}}]}
    assert seen[1]["headers"] == seen[0]["headers"]
    assert ("x-request-id", "6f1c2f64-3f7e-4f43-9d55-1f2b8f0c9a10") in seen[1]["headers"]
    assert seen[1]["body"] == seen[0]["body"]
    assert seen[1]["peer"] == seen[0]["peer"]  # one kept-alive connection for both


def test_a_direct_post_sends_the_json_the_client_would_for_any_request_model(
        upstream: tuple[str, list[dict[str, Any]]]) -> None:
    """Integer keys (`logit_bias`), small floats, escapes: the same JSON, though a float
    may be written otherwise (1e-05 as 0.00001)."""
    url, seen = upstream
    payload = {**PAYLOAD, "logit_bias": {50256: -100.0, 7: 1e-05}, "top_p": 2.5e-07,
               "seed": -(2**63), "stop": ["\n\"", "\u2028", "</s>"], "n": None}

    async def both() -> None:
        http = await _holder().get()
        await http.post(url, json=payload)
        await post_json(http, url, payload)

    asyncio.run(both())
    assert json.loads(seen[1]["body"]) == json.loads(seen[0]["body"])


def test_a_direct_stream_arrives_as_the_clients_does_and_keeps_its_connection(
        upstream: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = upstream

    async def read(http: httpx.AsyncClient, opened: Any) -> list[str]:
        async with opened as response:
            assert response.status_code == 200
            return [line async for line in response.aiter_lines() if line]

    async def both() -> tuple[list[str], list[str]]:
        http = await _holder().get()
        payload = {**PAYLOAD, "stream": True}
        return (await read(http, http.stream("POST", url, json=payload)),
                await read(http, stream_json(http, url, payload)))

    by_client, direct = asyncio.run(both())
    assert direct == by_client == ['data: {"n": 1}', "data: [DONE]"]
    assert seen[1]["headers"] == seen[0]["headers"] and seen[1]["body"] == seen[0]["body"]
    assert seen[1]["peer"] == seen[0]["peer"]


def test_a_silent_upstream_times_out_as_the_clients_read_timeout() -> None:
    async def call(url: str) -> None:
        await post_json(await _holder(read_s=0.2).get(), f"{url}/v1/chat/completions", PAYLOAD)

    with silent_socket() as url, pytest.raises(httpx.ReadTimeout):
        asyncio.run(call(url))


def test_a_client_without_a_transport_of_its_own_sends_the_request_itself(
        upstream: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = upstream

    async def call() -> httpx.Response:
        return await post_json(await _holder(http11=False).get(), url, PAYLOAD)

    answer = asyncio.run(call())
    assert answer.json() == {"choices": [{"message": {"content": "좋아"}}]}
    assert ("content-type", "application/json") in seen[0]["headers"]

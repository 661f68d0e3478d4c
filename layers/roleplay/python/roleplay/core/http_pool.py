"""A pooled httpx client per event loop for one upstream, with that upstream's timeouts.

Connect and read timeouts are separate: a Server A that is down fails fast, one that is
slowly generating a long reply is given time. The client is reused across requests
(keep-alive) and re-opened only when the running loop changes (`LoopBoundClient`).
With `http11`, plain-HTTP URLs go through `core.http11_transport` (a tenth of httpx's
own transport's CPU per call), unless a proxy is configured in the environment, which
httpx's transport honours.

`post_json` and `stream_json` (the LLM's completions, one per turn) hand such a request
straight to that transport: httpx's client around it (URL merging, cookies, auth and
redirect steps, hooks) cost about as much again as the transport itself. What the client
would add is added here: its default headers, its timeouts, the request id.
"""

from __future__ import annotations

import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import httpx
import orjson

from roleplay.core import request_context
from roleplay.core.loop_bound import LoopBoundClient
from roleplay.core.settings import Settings, get_settings

Timeouts = Callable[[Settings], tuple[float, float]]
"""Settings → (connect seconds, read seconds)."""


async def _pass_request_id(request: httpx.Request) -> None:
    """Server A's logs join ours: each upstream call carries the request's id, as a UUID
    (llama-cpp-python's server answers 400 to any other `X-Request-ID`)."""
    upstream_id = request_context.upstream_request_id()
    if upstream_id and "x-request-id" not in request.headers:
        request.headers["X-Request-ID"] = upstream_id


def pooled_http(timeouts: Timeouts, *, max_connections: int, keepalive: int,
                http11: bool = False) -> LoopBoundClient[httpx.AsyncClient]:
    def open_client() -> httpx.AsyncClient:
        connect, read = timeouts(get_settings())
        mounts: dict[str, httpx.AsyncBaseTransport] | None = None
        if http11 and not urllib.request.getproxies():
            from roleplay.core.http11_transport import Http11Transport

            direct = Http11Transport(max_connections=max_connections, keepalive=keepalive)
            mounts = {"http://": direct}
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect, read=read, write=connect, pool=connect),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=keepalive),
            event_hooks={"request": [_pass_request_id]}, mounts=mounts)
        if mounts is not None:
            _direct[client] = _Direct(direct, client)
        return client

    async def close_client(client: httpx.AsyncClient) -> None:
        await client.aclose()

    return LoopBoundClient(open_client, close_client)


class _Direct:
    """A client's plain-HTTP transport, and what its JSON requests carry: the client's
    default headers with the JSON content type, and its timeouts."""

    __slots__ = ("headers", "timeouts", "transport")

    def __init__(self, transport: httpx.AsyncBaseTransport, client: httpx.AsyncClient) -> None:
        self.transport = transport
        self.headers = httpx.Headers(client.headers)
        self.headers["Content-Type"] = "application/json"
        self.timeouts = client.timeout.as_dict()


_direct: weakref.WeakKeyDictionary[httpx.AsyncClient, _Direct] = weakref.WeakKeyDictionary()


def json_body(payload: Any) -> bytes:
    """`payload` as httpx encodes `json=` (compact, UTF-8), by orjson: a turn's prompt of
    120 messages in 3 µs instead of the standard library's 63. The same bytes, but for a
    float's notation (1e-05 is 0.00001) and non-finite floats, which orjson sends as null
    and which no request model here admits."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


@lru_cache(maxsize=64)
def _parsed(url: str) -> httpx.URL:
    """An upstream's URL parsed once: a turn's completion goes to one of a few."""
    return httpx.URL(url)


async def _direct_request(http: httpx.AsyncClient, url: str,
                          payload: Any) -> tuple[httpx.AsyncBaseTransport, httpx.Request] | None:
    """The request as `http.post(url, json=payload)` would send it, and the transport to
    send it on; None when the client has none of its own for `url` (https, a proxy, a
    test's transport): the client then sends it."""
    direct = _direct.get(http)
    if direct is None or not url.startswith("http://") or http.is_closed:
        return None
    request = httpx.Request("POST", _parsed(url), content=json_body(payload), headers=direct.headers,
                            extensions={"timeout": direct.timeouts})
    await _pass_request_id(request)
    return direct.transport, request


async def post_json(http: httpx.AsyncClient, url: str, payload: Any) -> httpx.Response:
    """`http.post(url, json=payload)`, its answer read whole."""
    direct = await _direct_request(http, url, payload)
    if direct is None:
        return await http.post(url, json=payload)
    transport, request = direct
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


@asynccontextmanager
async def stream_json(http: httpx.AsyncClient, url: str, payload: Any) -> AsyncIterator[httpx.Response]:
    """`http.stream("POST", url, json=payload)`: the answer as it arrives."""
    direct = await _direct_request(http, url, payload)
    if direct is None:
        async with http.stream("POST", url, json=payload) as response:
            yield response
        return
    transport, request = direct
    response = await transport.handle_async_request(request)
    try:
        yield response
    finally:
        await response.aclose()

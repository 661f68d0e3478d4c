"""A pooled httpx client per event loop for one upstream, with that upstream's timeouts.

Connect and read timeouts are separate: a Server A that is down fails fast, one that is
slowly generating a long reply is given time. The client is reused across requests
(keep-alive) and re-opened only when the running loop changes (`LoopBoundClient`).
With `http11`, plain-HTTP URLs go through `core.http11_transport` (a tenth of httpx's
own transport's CPU per call), unless a proxy is configured in the environment, which
httpx's transport honours.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import httpx

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

            mounts = {"http://": Http11Transport(max_connections=max_connections,
                                                 keepalive=keepalive)}
        return httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect, read=read, write=connect, pool=connect),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=keepalive),
            event_hooks={"request": [_pass_request_id]}, mounts=mounts)

    async def close_client(client: httpx.AsyncClient) -> None:
        await client.aclose()

    return LoopBoundClient(open_client, close_client)

"""One async client per running event loop, closed when that loop shuts down.

Async Redis and httpx clients are bound to the loop that opened them. FastAPI's
TestClient opens a new loop per block, and a Lambda runtime may too, so a module-level
client would break on the next loop. `LoopBoundClient` hands out the current loop's
client, opening one when the loop changes. Each client is closed on its own loop: a
parked async generator is finalised by `loop.shutdown_asyncgens()`, which
`asyncio.run`, `asyncio.Runner` and anyio call before closing a loop, so no socket
outlives its loop and no old client is leaked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

ClientT = TypeVar("ClientT")


class LoopBoundClient(Generic[ClientT]):
    def __init__(
        self,
        open_client: Callable[[], ClientT],
        close_client: Callable[[ClientT], Awaitable[None]],
    ) -> None:
        self._open_client = open_client
        self._close_client = close_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: ClientT | None = None
        self._guard: AsyncGenerator[None, None] | None = None

    async def get(self) -> ClientT:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        client = self._open_client()
        guard = self._close_on_loop_shutdown(client)
        await guard.__anext__()
        self._loop, self._client, self._guard = loop, client, guard
        return client

    async def close(self) -> None:
        """Closes the current loop's client now (tests, settings changes)."""
        guard = self._guard
        same_loop = self._loop is asyncio.get_running_loop()
        self._loop, self._client, self._guard = None, None, None
        if guard is not None and same_loop:
            await guard.aclose()

    async def _close_on_loop_shutdown(self, client: ClientT) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_client(client)

"""One async client per running event loop, closed when that loop shuts down.

Async Redis and httpx clients are bound to the loop that opened them. FastAPI's
TestClient opens a new loop per block, and a Lambda runtime may too, so a module-level
client would break on the next loop. `LoopBoundClient` hands out the current loop's
client, opening one the first time a loop asks, and keeps one per loop (a loop that
comes back, like Mangum's long-lived one, finds its client again). Each client is
closed on its own loop: a parked async generator is finalised by
`loop.shutdown_asyncgens()`, which `asyncio.run`, `asyncio.Runner` and anyio call
before closing a loop, so no socket outlives its loop and no old client is leaked.
"""

from __future__ import annotations

import asyncio
import weakref
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
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[ClientT, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    async def get(self) -> ClientT:
        loop = asyncio.get_running_loop()
        held = self._per_loop.get(loop)
        if held is not None:
            return held[0]
        for closed in [other for other in self._per_loop if other.is_closed()]:
            del self._per_loop[closed]  # already closed by its loop's shutdown; forget it
        client = self._open_client()
        guard = self._close_on_loop_shutdown(client)
        await guard.__anext__()
        self._per_loop[loop] = (client, guard)
        return client

    async def close(self) -> None:
        """Closes the current loop's client now (tests, settings changes)."""
        held = self._per_loop.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()

    async def _close_on_loop_shutdown(self, client: ClientT) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_client(client)

"""Where card work runs: worker threads, a few at a time, never the event loop.

Reading an 8 MB card (multipart, base64, JSON, the walk in `storable`, pydantic, token
counts) takes a request tens to hundreds of milliseconds of CPU; on the event loop every
other request of the process would wait that long. In a worker thread the loop keeps
answering: the interpreter hands it the GIL every few milliseconds of pure Python, and
tiktoken releases it. The work is bounded by size (`CARD_MAX_BYTES`, `MULTIPART_MAX_PARTS`,
`storable.MAX_VALUES`), so a thread always finishes; at most `CARD_WORKERS` run at once
in a process, so a flood of imports waits behind itself and leaves the shared thread
pool (DynamoDB calls, chat file imports) to everyone else.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio.to_thread

CARD_WORKERS = 2
T = TypeVar("T")
Args = TypeVarTuple("Args")

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary())


def _limiter() -> anyio.CapacityLimiter:
    """The running loop's limiter (a limiter belongs to the loop that made it)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(CARD_WORKERS)
    return limiter


async def off_loop(work: Callable[[*Args], T], *args: *Args) -> T:
    """`work(*args)` in a card worker thread; its exception, if any, raised here."""
    return await anyio.to_thread.run_sync(work, *args, limiter=_limiter())

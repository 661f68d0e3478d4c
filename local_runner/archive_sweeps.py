"""The local runner's stand-in for the deployed schedule: every `ARCHIVE_EVERY_S` it moves
conversations idle past `SESSION_HOT_TTL_S` out of Redis to the cold store, as the
summarizer function does there on `{"kind": "archive"}` every 15 minutes.

A sweep that fails is logged and the next one runs on time: one bad pass must not stop
archiving for the rest of the run. Shutdown cancels the loop, a sweep under way included;
the archive is safe to stop at any point, as it must be for a process that is killed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from roleplay.core.settings import get_settings
from roleplay.sessions import conversation_archive

logger = logging.getLogger("local_runner.archive_sweeps")


async def sweep_forever(every_s: float) -> None:
    """Sweeps every `every_s` seconds, the first one period after the start (a test's app,
    started and stopped at once, never sweeps)."""
    while True:
        await anyio.sleep(every_s)
        try:
            counts = await conversation_archive.sweep_idle()
        except Exception:
            logger.exception("archive sweep failed; the next one is in %g s", every_s)
        else:
            logger.info("archive sweep: %s", counts)


@asynccontextmanager
async def archive_sweeps(_app: FastAPI) -> AsyncIterator[None]:
    """The runner app's lifespan: the sweep loop runs while the app serves."""
    async with anyio.create_task_group() as group:
        group.start_soon(sweep_forever, get_settings().archive_every_s)
        yield
        group.cancel_scope.cancel()

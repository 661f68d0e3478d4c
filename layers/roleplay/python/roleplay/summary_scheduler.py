"""Starts a summary without making the user wait for it.

In the local runner the summary runs as a background task after the response is
sent. In Lambda a background task would hold the response until it finished (Mangum
returns when the app does), so the deployed stack invokes the summarizer function
asynchronously instead (`InvocationType="Event"`), chosen by `SUMMARIZER_FUNCTION`.
Scheduling never fails a chat turn: a lost request is retried by a later turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from roleplay.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

logger = logging.getLogger("roleplay.summary_scheduler")

Defer = Callable[[Callable[[str], Awaitable[Any]], str], None]
"""How a handler runs work after its response: FastAPI's `BackgroundTasks.add_task`."""


class SummaryScheduler(Protocol):
    async def request(self, session_id: str) -> None: ...


async def run_summary(session_id: str) -> None:
    """The background job: summarize, and log rather than raise (nobody awaits it)."""
    from roleplay.summarizer import Summarizer

    try:
        result = await Summarizer().summarize(session_id)
    except Exception:
        logger.exception("summary of session %s crashed", session_id)
        return
    logger.info("summary of session %s: %s after %d pass(es)", session_id, result.outcome,
                result.passes)


class BackgroundSummaryScheduler:
    def __init__(self, defer: Defer) -> None:
        self._defer = defer
        self._requested: set[str] = set()

    async def request(self, session_id: str) -> None:
        if session_id not in self._requested:
            self._requested.add(session_id)
            self._defer(run_summary, session_id)


@lru_cache(maxsize=1)
def _lambda_client() -> LambdaClient:
    import boto3

    return boto3.client("lambda")


class LambdaSummaryScheduler:
    def __init__(self, function_name: str) -> None:
        self.function_name = function_name

    async def request(self, session_id: str) -> None:
        payload = json.dumps({"session_id": session_id}).encode()
        try:
            await asyncio.to_thread(_lambda_client().invoke, FunctionName=self.function_name,
                                    InvocationType="Event", Payload=payload)
        except Exception as error:  # botocore raises many kinds; none may fail the turn
            logger.warning("could not invoke %s for session %s: %s", self.function_name,
                           session_id, error)


def summary_scheduler(defer: Defer) -> SummaryScheduler:
    function_name = get_settings().summarizer_function
    return LambdaSummaryScheduler(function_name) if function_name else BackgroundSummaryScheduler(defer)

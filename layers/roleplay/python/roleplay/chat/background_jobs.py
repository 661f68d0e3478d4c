"""Work that must not make the user wait: summaries (and the embeddings of the memory
episodes they make), and speech in `delayed` TTS mode.

In the local runner a job runs as a background task after the response is sent. In
Lambda a background task would hold the response until it finished (Mangum returns
when the app does), so the deployed stack invokes a function asynchronously instead
(`InvocationType="Event"`): the summarizer for summaries (`SUMMARIZER_FUNCTION`), the
TTS function for speech (`SPEECH_FUNCTION`). Submitting never fails a chat turn: a
lost summary is retried by a later turn, lost speech leaves its URL answering 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from roleplay.core import metrics
from roleplay.core.job_models import JOB, Job, SpeechJob, SummaryJob
from roleplay.core.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

logger = logging.getLogger("roleplay.chat.background_jobs")

__all__ = ["JOB", "BackgroundJobRunner", "Defer", "Job", "JobRunner", "LambdaJobRunner", "SpeechJob",
           "SummaryJob", "handle_job_event", "job_runner", "run_job"]


Defer = Callable[[Callable[[Any], Awaitable[Any]], Any], None]
"""How a handler runs work after its response: FastAPI's `BackgroundTasks.add_task`."""


async def run_job(job: SummaryJob | SpeechJob) -> dict[str, Any]:
    """Runs one job and reports how it went; logs rather than raises (nobody awaits it)."""
    try:
        if isinstance(job, SummaryJob):
            from roleplay.chat.summarizer import Summarizer
            from roleplay.memory.episode_vectors import embed_missing

            started = time.perf_counter()
            result = await Summarizer().summarize(job.session_id)
            metrics.observe("summary_seconds", time.perf_counter() - started)
            metrics.inc("summaries_total", outcome=result.outcome)
            embedded = await embed_missing(job.session_id) if result.outcome != "gone" else 0
            report: dict[str, Any] = {"outcome": result.outcome, "passes": result.passes,
                                      "watermark": result.watermark, "error": result.error,
                                      "episodes_embedded": embedded}
        else:
            from roleplay.speech.tts_service import speak_into

            report = {"outcome": await speak_into(job)}
    except Exception:
        logger.exception("%s job crashed", job.kind)
        return {"kind": job.kind, "outcome": "crashed"}
    logger.info("%s job: %s", job.kind, report)
    return {"kind": job.kind, **report}


def handle_job_event(event: object) -> dict[str, Any]:
    """A Lambda's entry for an asynchronously invoked job. It runs on the thread's own
    event loop, the one Mangum uses too, so a function that serves both jobs and HTTP
    keeps one loop (and one Redis client) across invocations."""
    try:
        job = JOB.validate_python(event)
    except ValueError:
        return {"outcome": "invalid_event"}
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop.run_until_complete(run_job(job))


class JobRunner(Protocol):
    async def submit(self, job: SummaryJob | SpeechJob) -> None: ...


class BackgroundJobRunner:
    def __init__(self, defer: Defer) -> None:
        self._defer = defer
        self._submitted: set[str] = set()

    async def submit(self, job: SummaryJob | SpeechJob) -> None:
        key = job.model_dump_json()
        if key not in self._submitted:
            self._submitted.add(key)
            self._defer(run_job, job)


@lru_cache(maxsize=1)
def _lambda_client() -> LambdaClient:
    import boto3

    return boto3.client("lambda")


class LambdaJobRunner:
    """Jobs as asynchronous invocations; a kind without a function runs in-process."""

    def __init__(self, functions: dict[str, str | None], fallback: JobRunner) -> None:
        self.functions = functions
        self.fallback = fallback

    async def submit(self, job: SummaryJob | SpeechJob) -> None:
        function_name = self.functions.get(job.kind)
        if not function_name:
            await self.fallback.submit(job)
            return
        try:
            await asyncio.to_thread(_lambda_client().invoke, FunctionName=function_name,
                                    InvocationType="Event", Payload=job.model_dump_json().encode())
        except Exception as error:  # botocore raises many kinds; none may fail the turn
            logger.warning("could not invoke %s for a %s job: %s", function_name, job.kind, error)


def job_runner(defer: Defer) -> JobRunner:
    settings = get_settings()
    background = BackgroundJobRunner(defer)
    functions = {"summary": settings.summarizer_function, "speech": settings.speech_function}
    return LambdaJobRunner(functions, background) if any(functions.values()) else background

"""Lambda function `summarizer`: folds a session's older turns into its rolling summary.

Invoked asynchronously by the chat function (`InvocationType="Event"`) when a turn
ends past the summary threshold, so no user waits for it. Not an HTTP endpoint: its
event is a summary job: `{"kind": "summary", "session_id": "..."}`.
"""

import asyncio
import re
from typing import Any

from roleplay.characters import ID_PATTERN
from roleplay.settings import get_settings

get_settings()

_SESSION_ID = re.compile(ID_PATTERN)


async def _summarize(session_id: str) -> dict[str, Any]:
    from roleplay.background_jobs import SummaryJob, run_job

    return {"session_id": session_id, **await run_job(SummaryJob(session_id=session_id))}


def handler(event: dict[str, Any], _context: object) -> dict[str, Any]:
    session_id = event.get("session_id") if isinstance(event, dict) else None
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
        return {"session_id": session_id, "outcome": "invalid_event"}
    return asyncio.run(_summarize(session_id))

"""Lambda function `summarizer`: folds a session's older turns into its rolling summary, and
moves idle conversations out of Redis to the cold store.

Invoked asynchronously by the chat function (`InvocationType="Event"`) when a turn
ends past the summary threshold, so no user waits for it. Not an HTTP endpoint: its
event is a summary job, `{"kind": "summary", "session_id": "..."}`, or, every 15 minutes
from its schedule (template.yaml), `{"kind": "archive"}`.
"""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
import asyncio
import re
from typing import Any

from roleplay.characters.ids import ID_PATTERN
from roleplay.core.settings import get_settings

get_settings()

_SESSION_ID = re.compile(ID_PATTERN)


def handler(event: object, _context: object) -> dict[str, Any]:
    fields: dict[str, Any] = event if isinstance(event, dict) else {}
    if fields.get("kind") == "archive":
        return _archive()

    from roleplay.chat.background_jobs import handle_job_event

    session_id = fields.get("session_id")
    if (fields.get("kind", "summary") != "summary" or not isinstance(session_id, str)
            or not _SESSION_ID.fullmatch(session_id)):
        return {"session_id": session_id, "outcome": "invalid_event"}
    return {"session_id": session_id, **handle_job_event({**fields, "kind": "summary"})}


def _archive() -> dict[str, Any]:
    """One sweep, on the thread's own event loop as `handle_job_event` runs a summary: the
    container keeps one loop (and so one Redis client) across invocations. A sweep that
    raises fails the invocation, so it shows in the function's errors; the next schedule
    tries again."""
    from roleplay.sessions.conversation_archive import sweep_idle

    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return {"kind": "archive", **loop.run_until_complete(sweep_idle())}

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

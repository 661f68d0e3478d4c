"""Lambda function `summarizer`: folds a session's older turns into its rolling summary.

Invoked asynchronously by the chat function (`InvocationType="Event"`) when a turn
ends past the summary threshold, so no user waits for it. Not an HTTP endpoint: its
event is a summary job, `{"kind": "summary", "session_id": "..."}`.
"""

import re
from typing import Any

from roleplay.characters.model import ID_PATTERN
from roleplay.core.settings import get_settings

get_settings()

_SESSION_ID = re.compile(ID_PATTERN)


def handler(event: object, _context: object) -> dict[str, Any]:
    from roleplay.chat.background_jobs import handle_job_event

    fields: dict[str, Any] = event if isinstance(event, dict) else {}
    session_id = fields.get("session_id")
    if (fields.get("kind", "summary") != "summary" or not isinstance(session_id, str)
            or not _SESSION_ID.fullmatch(session_id)):
        return {"session_id": session_id, "outcome": "invalid_event"}
    return {"session_id": session_id, **handle_job_event({**fields, "kind": "summary"})}

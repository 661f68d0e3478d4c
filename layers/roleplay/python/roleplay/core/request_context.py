"""The request being served: its id, and the facts its log line will carry.

A context variable, so the id reaches every log line, error envelope and upstream call
of the request without being passed around, and each concurrent request has its own.
Anything below the handler may `note(...)` a fact (the session, the model, token
counts); `access_log` writes them once the response is sent.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""A client's `X-Request-ID` is kept only if it looks like an id: no spaces, quotes or
control characters that could forge a log line or a header."""


@dataclass
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    fields: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, float, str, dict[str, str]]] = field(default_factory=list)
    """EMF entries (on Lambda) written with the request's log line."""


_current: ContextVar[RequestRecord | None] = ContextVar("roleplay_request", default=None)


def begin(request_id: str | None) -> RequestRecord:
    """Starts a request's record with its id (a new one when the given one is not sane)."""
    if not (request_id and SANE_REQUEST_ID.fullmatch(request_id)):
        request_id = str(uuid.uuid4())
    record = RequestRecord(request_id)
    _current.set(record)
    return record


def current() -> RequestRecord | None:
    return _current.get()


def request_id() -> str | None:
    record = _current.get()
    return record.request_id if record else None


def upstream_request_id() -> str | None:
    """The id Server A is given: the request's own when it is a UUID, else a UUID derived
    from it (uuid5), noted in the log line as `upstream_request_id` so the two still join."""
    record = _current.get()
    if record is None:
        return None
    try:
        return str(uuid.UUID(record.request_id))
    except ValueError:
        derived = str(uuid.uuid5(uuid.NAMESPACE_OID, record.request_id))
        record.fields["upstream_request_id"] = derived
        return derived


def hashed(user_id: str) -> str:
    """A user as log lines show them: enough to follow one user, not to name them."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


def note(**fields: Any) -> None:
    """Adds facts to the current request's log line (ignored outside a request)."""
    record = _current.get()
    if record is not None:
        record.fields.update({k: v for k, v in fields.items() if v is not None})

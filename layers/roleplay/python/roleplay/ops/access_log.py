"""One JSON line per request, with its request id, and the request id on every answer.

The id is the client's `X-Request-ID` when it looks like one, else the API Gateway's
request id on Lambda, else a new one. It goes back in the `X-Request-ID` header, into
every error envelope, and upstream (`http_pool`), so Server A's logs join Server B's.

The line is written when the response has been sent (a streamed turn: after its last
event), with the facts the request noted on the way (`request_context.note`): user
(hashed), session, model, token counts, TTFT, summary scheduled, speech time, error
code. Message text appears only with `LOG_CONTENT=1`; tokens, secrets and audio never
do. The runner turns uvicorn's access log off: this line replaces it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from functools import lru_cache
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roleplay.core import metrics, request_context
from roleplay.core.settings import get_settings

_cold_start = True


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is now (the Lambda runtime and test captures swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


@lru_cache(maxsize=1)
def access_logger() -> logging.Logger:
    """`roleplay.access`, writing bare JSON lines to stdout (CloudWatch reads them as JSON)."""
    logger = logging.getLogger("roleplay.access")
    if not logger.handlers:
        handler = _StdoutHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return str(value.decode("latin-1"))
    event = scope.get("aws.event")
    if isinstance(event, dict):
        context = event.get("requestContext")
        if isinstance(context, dict) and isinstance(context.get("requestId"), str):
            return str(context["requestId"])
    return None


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestObservation:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = request_context.begin(_incoming_id(scope))
        header = (b"x-request-id", record.request_id.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._finish(scope, record, status)

    @staticmethod
    def _finish(scope: Scope, record: request_context.RequestRecord, status: int) -> None:
        global _cold_start
        settings = get_settings()
        route = _route(scope)
        code = record.fields.get("error_code")
        metrics.inc("requests_total", route=route, status=str(status))
        if code:
            metrics.inc("errors_total", code=str(code))
        if settings.log_requests:
            line: dict[str, Any] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": record.request_id, "method": scope.get("method"), "route": route,
                "status": status,
                "duration_ms": round((time.perf_counter() - record.started) * 1000, 2),
                **record.fields}
            if metrics.on_lambda():
                line["cold_start"] = _cold_start
            access_logger().info(json.dumps(line, ensure_ascii=False, default=str))
        _cold_start = False
        if record.metrics:
            metrics.write_emf(record.metrics)

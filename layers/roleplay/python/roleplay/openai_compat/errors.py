"""OpenAI's error shape for everything under `/v1`, so the SDKs raise their own exceptions.

Every other path answers our envelope (`{"success": false, "error": {code, message}}`);
this middleware rewrites those bodies under `/v1` into `{"error": {message, type,
param, code}}` with the same status and headers (a 503 keeps `Retry-After`, a 401 its
`WWW-Authenticate`). Request validation is a 400 here, as OpenAI answers it, not 422.
Errors raised by the handlers, the auth dependency, the body-size limit, the Redis
outage guard and unknown `/v1` paths all pass through it, so none escapes the shape.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/v1"

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def _param(details: Any) -> str | None:
    """The first invalid field, dotted (`messages.0.role`), from a validation error."""
    if isinstance(details, list) and details and isinstance(details[0], dict):
        loc = [str(part) for part in details[0].get("loc", []) if part != "body"]
        return ".".join(loc) or None
    return None


def reshaped(status: int, body: bytes) -> tuple[int, bytes] | None:
    """Our envelope error as OpenAI's (with 422 as 400); None if `body` is not one."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("success") is not False:
        return None
    error = payload.get("error")
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    param = _param(error.get("details")) if code == "validation_error" else None
    status = 400 if status == 422 else status
    message = str(error.get("message", ""))
    return status, json.dumps(openai_error(status, message, code, param),
                              ensure_ascii=False).encode()


class OpenAIErrorShape:
    """ASGI middleware: JSON error answers under `/v1` in OpenAI's shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=message["headers"])
                if message["status"] >= 400 and headers.get("content-type", "").startswith(
                        "application/json"):
                    start = message
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                await _send_reshaped(start, b"".join(chunks), send)
                return
            await send(message)

        await self.app(scope, receive, reshaping_send)


async def _send_reshaped(start: Message, body: bytes, send: Send) -> None:
    status = start["status"]
    changed = reshaped(status, body)
    if changed is not None:
        status, body = changed
    headers = MutableHeaders(raw=list(start["headers"]))
    headers["content-length"] = str(len(body))
    await send({**start, "status": status, "headers": headers.raw})
    await send({"type": "http.response.body", "body": body})

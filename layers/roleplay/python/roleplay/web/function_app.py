"""Builds the FastAPI app of a function handler, or of the local runner from several.

Every app built here answers errors the same way: the JSON envelope with a stable
code, never a traceback. Handlers raise `ApiError`s; anything unexpected is a 500
with a generic message and a log line.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roleplay.core.errors import ApiError
from roleplay.core.settings import get_settings
from roleplay.ops.access_log import RequestObservation
from roleplay.ops.heap import StartupHeapFreeze
from roleplay.web.anonymous_client import AnonymousCookie
from roleplay.web.cors import CrossOrigin
from roleplay.web.envelope import error_body
from roleplay.web.offline_docs import add_offline_docs

logger = logging.getLogger("roleplay")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def _json_error(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _validation_details(error: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in item.get("loc", ())], "msg": item.get("msg", ""),
         "type": item.get("type", "")}
        for item in error.errors()
    ]


async def _on_api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return _json_error(
        error.status_code, error.error_code, error.message, error.details, error.headers or None
    )


async def _on_validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    details = _validation_details(error)
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(part for part in first["loc"] if part != "body") or "request"
    return _json_error(422, "validation_error", f"{where}: {first['msg']}", details)


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, "http_error")
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return _json_error(error.status_code, code, str(error.detail), headers=headers or None)


def _allowed_methods(request: Request) -> str | None:
    """Every method the requested path answers to, read from the app's OpenAPI paths.
    Starlette's 405 names only the methods of the first route matching the path, so
    `/api/characters` (GET and POST on two routes) would advertise POST alone."""
    path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^/}]+\}", template))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) or None


def redis_outage(error: BaseException) -> tuple[str, str] | None:
    """The error code and message for Redis unreachable, too slow, or (a cluster) a shard
    down or a slot unserved; None for anything else. redis is imported only once it has
    raised (so a function that never touches Redis never pays for importing it at cold
    start)."""
    if not type(error).__module__.startswith("redis"):
        return None
    from redis.exceptions import (
        ClusterDownError,
        ConnectionError,
        RedisClusterUnreachableError,
        SlotNotCoveredError,
        TimeoutError,
        TryAgainError,
    )

    if isinstance(error, ClusterDownError | SlotNotCoveredError | TryAgainError):
        return ("redis_shard_unavailable",
                "part of the session store (a Redis Cluster shard) is down; try again shortly")
    if isinstance(error, ConnectionError | TimeoutError | RedisClusterUnreachableError):
        return "redis_unavailable", "session store (Redis) is unreachable; try again shortly"
    return None


class RedisOutage:
    """Answers 503 `redis_unavailable` when the session store cannot be reached, and
    `redis_shard_unavailable` when a cluster's shard is down."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            outage = redis_outage(error) if scope["type"] == "http" and not started else None
            if outage is None:
                raise
            logger.warning("redis unavailable: %s", error)
            response = _json_error(503, *outage, headers={"Retry-After": "5"})
            await response(scope, receive, send)


async def _on_unexpected(_: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=error)
    return _json_error(500, "internal_error", "internal server error")


class BodySizeLimit:
    """Refuses request bodies over the configured size before they are buffered whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = _body_limit(scope.get("path", ""))
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = _json_error(413, "payload_too_large", f"request body exceeds {limit} bytes")
        await response(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` while the route reads a body with no Content-Length. An
    HTTPException, because FastAPI turns any other error met while reading the body into
    a 400 "error parsing the body"; this one it re-raises, and `_on_http_error` answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


FILE_UPLOAD_PATHS = re.compile(r".*/api/characters/(import|[^/]+/lorebook)$")
"""Where a card or lorebook file is uploaded: CARD_MAX_BYTES, not MAX_BODY_BYTES, applies."""
CHAT_IMPORT_PATH = "/api/chat/sessions/import"
"""Where a SillyTavern chat file is uploaded: SILLYTAVERN_IMPORT_MAX_BYTES applies."""


def _body_limit(path: str) -> int:
    settings = get_settings()
    if FILE_UPLOAD_PATHS.match(path):
        return settings.card_max_bytes
    if path.endswith(CHAT_IMPORT_PATH):
        return settings.sillytavern_import_max_bytes
    return settings.max_body_bytes


_DEFERRED_PROVIDERS = frozenset({
    ("opentelemetry.trace", "ProxyTracerProvider"),
    ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
    ("opentelemetry._logs._internal", "ProxyLoggerProvider"),
})
"""What OpenTelemetry's API answers while nobody has set a provider (as FastAPI tells)."""


def native_telemetry() -> TelemetryConfig:
    """FastAPI's own OpenTelemetry (0.165), asked once, when the app is built, instead of
    on every request: FastAPI asks the three global providers whether any is set on each
    request (an environment lookup and a raised KeyError among them). A process that sets
    a provider before building its apps (`opentelemetry-instrument`, an SDK set up at
    start) keeps FastAPI's spans, metrics and logs, as does FASTAPI_OTEL_AUTO_CONFIGURE."""
    if os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    from opentelemetry import _logs, metrics, trace

    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(),
                 _logs.get_logger_provider())
    if any((type(p).__module__, type(p).__name__) not in _DEFERRED_PROVIDERS for p in providers):
        return {}
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_function_app(title: str, routers: Iterable[APIRouter], **fastapi_kwargs: Any) -> FastAPI:
    """A FastAPI app with the envelope error handlers, the given routes, and offline docs.

    The routers' routes become the app's own routes (`FastAPI(routes=...)`), built once
    when they were declared. `include_router` would keep each router as one entry of
    `app.routes` whose routes FastAPI (0.165) builds a second time, every parameter's and
    response model's TypeAdapter again, at the first request: most of a cold start's
    first invoke (chat's 22 routes, ~40 ms). Paths, OpenAPI and answers are the same
    (tests/web/test_function_app_routes.py). What a router-level include would add is
    refused: startup/shutdown handlers of a router (none has any); and since the routes
    were built by their router, `app.dependency_overrides` does not reach them (nothing
    here uses it: tests build their own app around the dependency they replace)."""
    routers = list(routers)
    if any(router.on_startup or router.on_shutdown for router in routers):
        raise ValueError("a function's router has startup/shutdown handlers: give them to the app")
    routes = [route for router in routers for route in router.routes]
    app = FastAPI(title=title, docs_url=None, redoc_url=None, routes=routes,
                  telemetry=native_telemetry(), **fastapi_kwargs)
    add_offline_docs(app)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(RedisOutage)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(AnonymousCookie)
    app.add_middleware(CrossOrigin)  # errors from the inner ones get CORS headers too
    app.add_middleware(RequestObservation)  # it sees every answer, preflights included
    app.add_middleware(StartupHeapFreeze)  # outermost: freezes once the first answer is done
    return app

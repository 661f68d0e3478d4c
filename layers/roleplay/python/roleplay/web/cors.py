"""Cross-origin requests from the origins in `CORS_ALLOW_ORIGINS`, and from no others.

A listed origin gets its own name back in `Access-Control-Allow-Origin` with
credentials allowed (the login cookie works across origins); its preflight is answered
here for every path, before routing. Any other origin gets no `Access-Control-*` header
at all, so the browser keeps the answer from its page; a preflight from it is a 403 in
the JSON envelope. `*` in the list admits every origin, without credentials.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roleplay.core.settings import get_settings
from roleplay.web.envelope import error_body

ALLOWED_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
DEFAULT_ALLOWED_HEADERS = "Authorization, Content-Type"
# Headers a page may read besides the CORS-safelisted ones: the cap's and 202's wait.
EXPOSED_HEADERS = "Retry-After, Location, X-Request-ID"
PREFLIGHT_MAX_AGE_S = "600"


class CrossOrigin:
    """ASGI middleware; reads the allowed origins from the settings on each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = get_settings().cors_allow_origins
        wildcard = "*" in allowed
        admitted = wildcard or origin.rstrip("/") in allowed
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight:
            await self._preflight(origin if admitted else None, wildcard, scope, receive, send)
            return
        if not admitted:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                _allow(response_headers, origin, wildcard)
                response_headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            await send(message)

        await self.app(scope, receive, with_cors)

    @staticmethod
    async def _preflight(origin: str | None, wildcard: bool, scope: Scope, receive: Receive,
                         send: Send) -> None:
        response: Response
        if origin is None:
            response = JSONResponse(
                error_body("cors_origin_not_allowed",
                           "this origin is not in CORS_ALLOW_ORIGINS"), status_code=403)
        else:
            response = Response(status_code=204)
            _allow(response.headers, origin, wildcard)
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = Headers(scope=scope).get(
                "access-control-request-headers", DEFAULT_ALLOWED_HEADERS)
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE_S
        response.headers["Vary"] = "Origin"
        await response(scope, receive, send)


def _allow(headers: MutableHeaders, origin: str, wildcard: bool) -> None:
    if wildcard:
        headers["Access-Control-Allow-Origin"] = "*"
    else:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers.add_vary_header("Origin")

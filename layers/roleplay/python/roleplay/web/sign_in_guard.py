"""Every request signed in, or a 401: for an app reachable without API Gateway.

The streaming chat answers through a Lambda Function URL (template.yaml:
ChatStreamFunction), so nothing in front of it checks anything. This wraps its ASGI app:
it refuses to start without a JWT key (JWT_SECRET or JWT_SECRET_ARN), and answers every
request without a good token (the same check as the API's) with the envelope's 401,
`/docs` and `/openapi.json` included. CORS preflights (OPTIONS) carry no credentials
and pass.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from roleplay.core.errors import Unauthorized
from roleplay.core.settings import get_settings
from roleplay.web.envelope import error_body
from roleplay.web.jwt_key import auth_enabled

NO_KEY = ("this app is reachable without API Gateway and needs sign-in: set JWT_SECRET or "
          "JWT_SECRET_ARN (template.yaml: JwtSecretArn)")


class SignedInOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            from roleplay.web.auth import user_from_request

            if not auth_enabled(get_settings()):
                refused = JSONResponse(error_body("not_configured", NO_KEY), status_code=503)
                await refused(scope, receive, send)
                return
            try:
                await user_from_request(Request(scope))
            except Unauthorized as error:
                refused = JSONResponse(error_body(error.error_code, error.message),
                                       status_code=401, headers=error.headers or None)
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Fails the server's startup, with why, when there is no key to check tokens with."""
        if auth_enabled(get_settings()):
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": NO_KEY})

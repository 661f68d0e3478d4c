"""`GET /metrics` for Prometheus: the local runner's only route that no Lambda serves
(Lambdas write the same metrics as EMF log lines; nothing can scrape a function).

Not public when sign-in is on: it then needs `Authorization: Bearer $METRICS_TOKEN`,
and without a configured token it is refused. A token, once set, is always required.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from roleplay.core import metrics
from roleplay.core.errors import Forbidden, Unauthorized
from roleplay.core.settings import get_settings
from roleplay.web.jwt_key import auth_enabled

router = APIRouter(tags=["operations"])


def _check_token(request: Request) -> None:
    settings = get_settings()
    if settings.metrics_token is None:
        if auth_enabled(settings):
            raise Forbidden("metrics are not public with sign-in on: set METRICS_TOKEN",
                            code="metrics_token_required")
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    wanted = settings.metrics_token.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), wanted.encode()):
        raise Unauthorized("GET /metrics needs Authorization: Bearer <METRICS_TOKEN>",
                           headers={"WWW-Authenticate": "Bearer"})


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    _check_token(request)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)

"""What `/api/health` shows to whom. What is probed is `roleplay.web.health`'s job.

Anyone may ask whether Server B and each dependency work: they get a status per
dependency (`ok` / `degraded` / `down`), nothing else. Where a dependency is and why
its probe failed (text that can hold a URL) is shown only to a signed-in admin, and
always with credentials redacted. A missing or bad token is just an anonymous caller:
a health check never answers 401.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from starlette.requests import Request

from roleplay.core.errors import Unauthorized
from roleplay.core.url_redaction import redact_url, redact_urls_in
from roleplay.web.health import GpuReport, HealthReport

DependencyStatus = Literal["ok", "degraded", "down"]
_DOWN = frozenset({"unreachable", "down", "timeout"})


class PublicCheck(BaseModel):
    status: DependencyStatus


class PublicHealthReport(BaseModel):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, PublicCheck]
    """Configured dependencies only; one that is not configured is left out."""
    breakers: dict[str, Literal["closed", "open"]] = {}
    """Each upstream's circuit breaker by position (`llm[0]`): states, never addresses."""
    gpu: GpuReport | None = None
    """The GPU's resident mode and switch figures: no address either."""


def _public_status(probe_status: str) -> DependencyStatus:
    if probe_status == "ok":
        return "ok"
    return "down" if probe_status in _DOWN else "degraded"


def public_view(report: HealthReport) -> PublicHealthReport:
    return PublicHealthReport(
        status=report.status,
        checks={name: PublicCheck(status=_public_status(result.status))
                for name, result in report.checks.items() if result.status != "not_configured"},
        breakers=report.breakers, gpu=report.gpu,
    )


def admin_view(report: HealthReport) -> HealthReport:
    checks = {
        name: result.model_copy(update={
            "target": redact_url(result.target) if result.target else result.target,
            "error": redact_urls_in(result.error) if result.error else result.error,
        })
        for name, result in report.checks.items()
    }
    return report.model_copy(update={"checks": checks})


async def caller_is_admin(request: Request) -> bool:
    """Only a signed-in token can be an admin: with sign-in off nothing is asked of Redis
    (an anonymous client's identity needs it), so health still answers while Redis is down."""
    from roleplay.core.settings import get_settings
    from roleplay.web.auth import user_from_request
    from roleplay.web.jwt_key import auth_enabled

    if not auth_enabled(get_settings()):
        return False
    try:
        return (await user_from_request(request)).is_admin
    except Unauthorized:
        return False


async def view_for(request: Request, report: HealthReport) -> HealthReport | PublicHealthReport:
    return admin_view(report) if await caller_is_admin(request) else public_view(report)

"""Lambda function `health`: Redis and each upstream, ok or unreachable.

Anyone gets the status of each dependency; where each one is, only a signed-in admin
(roleplay.web.health_view).
"""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from mangum import Mangum

from roleplay.core.settings import get_settings
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, error_body, ok
from roleplay.web.function_app import create_function_app
from roleplay.web.health import HealthReport, check_health
from roleplay.web.health_view import PublicHealthReport, view_for

get_settings()

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)


@router.get("/api/health", response_model=Envelope[PublicHealthReport | HealthReport])
async def health(request: Request) -> JSONResponse:
    report = await check_health()
    shown = await view_for(request, report)
    if report.status == "down":
        body = error_body("unhealthy", "Redis is unreachable", shown.model_dump(mode="json"))
        return JSONResponse(body, status_code=503)
    return JSONResponse(ok(shown).model_dump(mode="json"))


app = create_function_app("health", [router])
handler = Mangum(app, lifespan="off")

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

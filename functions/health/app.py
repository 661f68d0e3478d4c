"""Lambda function `health`: Redis and each upstream, ok or unreachable."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from mangum import Mangum

from roleplay.envelope import ERROR_RESPONSES, Envelope, error_body, ok
from roleplay.function_app import create_function_app
from roleplay.health import HealthReport, check_health
from roleplay.settings import get_settings

get_settings()

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)


@router.get("/api/health", response_model=Envelope[HealthReport])
async def health() -> JSONResponse:
    report = await check_health()
    if report.status == "down":
        body = error_body("unhealthy", "Redis is unreachable", report.model_dump(mode="json"))
        return JSONResponse(body, status_code=503)
    return JSONResponse(ok(report).model_dump(mode="json"))


app = create_function_app("health", [router])
handler = Mangum(app, lifespan="off")

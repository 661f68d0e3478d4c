"""One ASGI app with every function's routes, as API Gateway would route them.

Each function module owns its paths (`/api/chat`, `/api/characters/{id}`, ...); the
runner includes their routers unchanged, so a request reaches the same handler code
here as in Lambda. tests/deploy/test_routes.py checks these routes against template.yaml.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter, FastAPI

from local_runner.playground import add_playground
from roleplay.openai_compat.errors import OpenAIErrorShape
from roleplay.web.function_app import create_function_app

FUNCTIONS = ("health", "characters", "models", "chat", "tts", "voices", "users", "openai_api")


def function_routers() -> dict[str, APIRouter]:
    return {
        name: importlib.import_module(f"functions.{name}.app").router for name in FUNCTIONS
    }


def build_app() -> FastAPI:
    from local_runner.metrics_route import router as metrics_router

    app = create_function_app(
        "Server B",
        [*function_routers().values(), metrics_router],
        description="Character role-play chat backend: every function handler in one app.",
    )
    add_playground(app)
    app.add_middleware(OpenAIErrorShape)  # errors under /v1 in OpenAI's shape
    return app

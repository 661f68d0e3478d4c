"""Every function served as API Gateway would route it, through the function's own app.

Each request goes to the app its Lambda runs (`functions/<name>/app.py`'s `app`, the object
Mangum wraps, with its middleware and error handlers): local_runner.function_router picks it
by the function's routes. The runner's own app answers the rest: the playground at `/`,
`GET /metrics`, and `/docs` with one `/openapi.json` of every function's operations; its
lifespan moves idle conversations to the cold store (local_runner.archive_sweeps).
tests/deploy/test_routes.py checks the functions' routes against template.yaml, and
tests/deploy/test_runner_mounts_functions.py that the runner adds nothing to them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from local_runner.function_router import FunctionRouter
from local_runner.playground import add_playground
from roleplay.web.function_app import create_function_app

FUNCTIONS = ("health", "characters", "models", "chat", "tts", "voices", "users", "openai_api")


def function_apps() -> dict[str, FastAPI]:
    """{function name: the FastAPI app its handler serves}, in FUNCTIONS order."""
    apps: dict[str, FastAPI] = {}
    for name in FUNCTIONS:
        app = importlib.import_module(f"functions.{name}.app").app
        assert isinstance(app, FastAPI), name
        apps[name] = app
    return apps


def documentation_paths() -> frozenset[str]:
    """The routes every function app has for its own docs (`/docs`, its assets and
    `/openapi.json`): the runner's own answer those, for all functions at once."""
    return frozenset(getattr(route, "path", "") for route in create_function_app("docs", []).routes)


def _add_combined_openapi(runner: FastAPI, functions: Iterable[FastAPI]) -> None:
    """The runner's `/openapi.json` (and `/docs`) list every function's operations, as one
    app of all their routes would."""
    routes = [*runner.routes, *(route for app in functions for route in app.routes)]

    def openapi() -> dict[str, Any]:
        if runner.openapi_schema is None:
            runner.openapi_schema = get_openapi(
                title=runner.title, version=runner.version, openapi_version=runner.openapi_version,
                description=runner.description, routes=routes)
        return runner.openapi_schema

    runner.openapi = openapi  # type: ignore[method-assign]


def build_app() -> FunctionRouter:
    from local_runner.archive_sweeps import archive_sweeps
    from local_runner.metrics_route import router as metrics_router

    functions = function_apps()
    runner = create_function_app(
        "Server B",
        [metrics_router],
        description="Character role-play chat backend: every function handler in one app.",
        lifespan=archive_sweeps,
    )
    add_playground(runner)
    _add_combined_openapi(runner, functions.values())
    return FunctionRouter(functions, runner, not_routed=documentation_paths())

"""A function app's routes are its own, built once (issue 30's cold start).

`create_function_app` hands the routers' routes to the app instead of including the
routers: FastAPI (0.165) builds an included router's routes a second time at the first
request. The app must not differ in anything a client sees: same OpenAPI, same paths.
"""

from __future__ import annotations

import importlib
from http import HTTPStatus

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from local_runner.app import FUNCTIONS
from roleplay.web.envelope import ERROR_RESPONSES, ERROR_STATUSES
from roleplay.web.function_app import create_function_app
from roleplay.web.offline_docs import add_offline_docs


def function_module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"functions.{name}.app")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_openapi_is_what_an_included_router_gives(name: str) -> None:
    module = function_module(name)
    included = FastAPI(title=module.app.title, docs_url=None, redoc_url=None)
    add_offline_docs(included)
    included.include_router(module.router)
    assert module.app.openapi() == included.openapi()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_route_is_the_apps_own(name: str) -> None:
    module = function_module(name)
    own = [route for route in module.app.routes if isinstance(route, APIRoute)]
    assert own and {id(route) for route in module.router.routes} <= {id(route) for route in own}
    assert all(hasattr(route, "path") for route in module.app.routes)  # no included router


def test_routes_of_several_routers_answer() -> None:
    first, second = APIRouter(prefix="/a"), APIRouter()

    @first.get("/one")
    async def one() -> dict[str, int]:
        return {"n": 1}

    @second.get("/two/{n}")
    async def two(n: int) -> dict[str, int]:
        return {"n": n}

    with TestClient(create_function_app("two", [first, second])) as client:
        assert client.get("/a/one").json() == {"n": 1}
        assert client.get("/two/2").json() == {"n": 2}
        refused = client.get("/two/x")
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"
        assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_a_router_with_startup_handlers_is_refused() -> None:
    router = APIRouter(on_startup=[lambda: None])
    with pytest.raises(ValueError, match="startup"):
        create_function_app("started", [router])


@pytest.mark.parametrize("name", [name for name in FUNCTIONS
                                  if function_module(name).router.responses == ERROR_RESPONSES])
def test_every_operation_documents_the_error_envelope(name: str) -> None:
    """ERROR_RESPONSES names the model once and refers to it for the other statuses: the
    schema says what it said when each status named the model."""
    schema = function_module(name).app.openapi()
    assert {"ErrorEnvelope", "ErrorBody"} <= set(schema["components"]["schemas"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status in ERROR_STATUSES:
                assert operation["responses"][str(status)] == {
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
                    "description": HTTPStatus(status).phrase,
                }, (path, method, status)

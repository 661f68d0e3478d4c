"""The local runner serves each function through that function's own app (issue 25).

`functions/<name>/app.py`'s `app` is what Mangum wraps in the Lambda; the runner hands it
each request the function owns, so its middleware, error handlers and routes are the
function's, and the two cannot drift. The runner's own app (playground, /metrics, docs)
answers only what no function owns.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from local_runner.app import FUNCTIONS, build_app, documentation_paths
from local_runner.function_router import FunctionRouter
from roleplay.openai_compat.errors import OpenAIErrorShape
from tests.support.sam_template import http_routes_by_function

APP_ORIGIN = "http://localhost:3000"
UNUSED_METHOD = "TRACE"  # no route takes it: each route's path answers 405
VOLATILE_HEADERS = {"date", "x-request-id", "content-length", "set-cookie"}


def function_app(name: str) -> FastAPI:
    app = importlib.import_module(f"functions.{name}.app").app
    assert isinstance(app, FastAPI)
    return app


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abc", path)


def template_routes() -> Iterator[tuple[str, str, str]]:
    for name, routes in sorted(http_routes_by_function().items()):
        for method, path in sorted(routes):
            yield name, method, path


class Marked:
    """Wraps an app's middleware stack: every answer that went through it says so."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any], mark: str) -> None:
        self.app, self.mark = app, mark

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"],
                                                  (b"x-served-by", self.mark.encode())]}
            await send(message)

        await self.app(scope, receive, marking_send)


def mark_stack(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    app = function_app(name)
    monkeypatch.setattr(app, "middleware_stack", Marked(app.build_middleware_stack(), name))


def comparable(response: Any) -> tuple[int, dict[str, str], str]:
    headers = {key: value for key, value in response.headers.items() if key not in VOLATILE_HEADERS}
    return response.status_code, headers, re.sub(r'"request_id": ?"[^"]+"', "", response.text)


def test_the_runner_hands_every_template_route_to_the_function_apps_own_object() -> None:
    runner = build_app()
    assert isinstance(runner, FunctionRouter)
    for name, method, path in template_routes():
        scope = {"type": "http", "method": method, "path": concrete(path), "root_path": "",
                 "headers": [], "query_string": b""}
        assert runner.app_for(scope) is function_app(name), (method, path)
        assert runner.app_for({**scope, "method": "OPTIONS"}) is function_app(name), path


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_functions_requests_pass_through_its_own_middleware_stack_and_no_other(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for each in FUNCTIONS:
        mark_stack(monkeypatch, each)
    routes = http_routes_by_function()[name]
    with TestClient(build_app()) as client:
        for _, path in routes:
            # A method no route takes: the function's own 405, no upstream needed.
            response = client.request(UNUSED_METHOD, concrete(path))
            assert response.headers.get_list("x-served-by") == [name], path
            assert response.status_code == 405


def test_the_openai_error_shape_on_v1_is_the_openai_api_apps_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    openai_api = function_app("openai_api")
    assert OpenAIErrorShape in [middleware.cls for middleware in openai_api.user_middleware]
    with TestClient(build_app()) as client:
        shaped = client.post("/v1/chat/completions", json={})
        unknown = client.get("/v1/no-such-thing")
    assert shaped.status_code == 400 and set(shaped.json()["error"]) == {"message", "type", "param", "code"}
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"

    # The same function app without it: the runner answers our envelope, so nothing of
    # the runner's own reshaped those errors.
    without = [m for m in openai_api.user_middleware if m.cls is not OpenAIErrorShape]
    monkeypatch.setattr(openai_api, "user_middleware", without)
    monkeypatch.setattr(openai_api, "middleware_stack", openai_api.build_middleware_stack())
    with TestClient(build_app()) as client:
        plain = client.post("/v1/chat/completions", json={})
    assert plain.status_code == 422 and plain.json()["success"] is False


def test_a_route_missing_from_a_functions_app_is_missing_in_the_runner(
        monkeypatch: pytest.MonkeyPatch) -> None:
    voices = function_app("voices")
    with TestClient(build_app()) as client:
        assert client.get("/api/tts/voices").status_code == 200
    only_docs = [route for route in voices.router.routes
                 if getattr(route, "path", None) in documentation_paths()]
    monkeypatch.setattr(voices.router, "routes", only_docs)
    with TestClient(build_app()) as client:
        missing = client.get("/api/tts/voices")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("name", "method", "path"), list(template_routes()))
def test_the_runner_answers_a_function_route_exactly_as_the_function_app_alone(
        settings_env: Callable[..., None], name: str, method: str, path: str) -> None:
    """Same status, headers and body, through the runner or the function's app alone: a
    405 (error handler, Allow from the function's own schema), a CORS preflight and an
    answer to an origin that is not listed."""
    settings_env(CORS_ALLOW_ORIGINS=APP_ORIGIN)
    requests = [
        (UNUSED_METHOD, {"Origin": APP_ORIGIN}),
        ("OPTIONS", {"Origin": APP_ORIGIN, "Access-Control-Request-Method": method,
                     "Access-Control-Request-Headers": "content-type"}),
        ("OPTIONS", {"Origin": "https://evil.example", "Access-Control-Request-Method": method}),
    ]
    with TestClient(build_app()) as runner, TestClient(function_app(name)) as alone:
        for verb, headers in requests:
            through_runner = runner.request(verb, concrete(path), headers=headers)
            directly = alone.request(verb, concrete(path), headers=headers)
            assert comparable(through_runner) == comparable(directly), (verb, headers)


def test_a_request_to_a_function_writes_one_access_log_line(
        client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    """One RequestObservation (the function's), not one of the runner's around it too."""
    capsys.readouterr()
    client.get("/api/tts/voices")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{") and '"request_id"' in line]
    assert [line["route"] for line in lines] == ["/api/tts/voices"]


def test_every_function_apps_lifespan_runs_under_the_runner_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []

    def recording(name: str) -> Callable[[Any], Any]:
        @asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[None]:
            events.append((name, "startup"))
            yield
            events.append((name, "shutdown"))

        return lifespan

    for name in FUNCTIONS:
        monkeypatch.setattr(function_app(name).router, "lifespan_context", recording(name))
    with TestClient(build_app()):
        assert events == [(name, "startup") for name in FUNCTIONS]
    assert events[len(FUNCTIONS):] == [(name, "shutdown") for name in reversed(FUNCTIONS)]


def test_a_function_apps_lifespan_state_reaches_its_requests_under_the_runner(
        monkeypatch: pytest.MonkeyPatch) -> None:
    voices = function_app("voices")
    seen: list[dict[str, Any]] = []

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"voices_started": True}

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope.get("state", {})))
        await stack(scope, receive, send)

    stack = voices.build_middleware_stack()
    monkeypatch.setattr(voices.router, "lifespan_context", lifespan)
    monkeypatch.setattr(voices, "middleware_stack", recording)
    with TestClient(build_app()) as client:
        assert client.get("/api/tts/voices").status_code == 200
    assert seen == [{"voices_started": True}]


def test_a_function_that_fails_to_start_fails_the_runners_startup_and_the_started_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[str] = []

    @asynccontextmanager
    async def fine(_: Any) -> AsyncIterator[None]:
        yield
        stopped.append("health")

    @asynccontextmanager
    async def broken(_: Any) -> AsyncIterator[None]:
        raise RuntimeError("characters cannot start")
        yield

    monkeypatch.setattr(function_app("health").router, "lifespan_context", fine)
    monkeypatch.setattr(function_app("characters").router, "lifespan_context", broken)
    with pytest.raises(RuntimeError, match="characters cannot start"), TestClient(build_app()):
        pass
    assert stopped == ["health"]


def test_the_runners_own_routes_belong_to_no_function(client: TestClient) -> None:
    runner = build_app()
    for path in ["/", "/playground.js", "/metrics", "/docs", "/docs/assets/swagger-ui.css",
                 "/openapi.json", "/no/such/route"]:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        assert runner.app_for(scope) is runner.runner, path
    assert client.get("/").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_the_runners_schema_lists_every_functions_operations_and_nothing_else(
        client: TestClient) -> None:
    def operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
        return {(method.upper(), path) for path, item in schema["paths"].items() for method in item}

    every_function = set().union(*(operations(function_app(name).openapi()) for name in FUNCTIONS))
    assert operations(client.get("/openapi.json").json()) == every_function
    assert every_function == set().union(*http_routes_by_function().values())

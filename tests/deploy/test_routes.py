"""The local runner routes exactly as API Gateway does, per template.yaml."""

import re

from local_runner.app import FUNCTIONS, build_app
from local_runner.function_router import FunctionRouter, Route
from tests.support.sam_template import http_routes_by_function


def _operations(routes: list[Route]) -> set[tuple[str, str]]:
    return {(method, route.path or "") for route in routes for method in route.methods or ()}


def _request(method: str, path: str) -> dict[str, object]:
    """An HTTP scope for `path` with each `{parameter}` filled in."""
    return {"type": "http", "method": method, "path": re.sub(r"\{[^}]+\}", "abc", path),
            "root_path": "", "headers": [], "query_string": b""}


def test_every_function_serves_exactly_its_template_routes() -> None:
    template = http_routes_by_function()
    runner = build_app()
    assert set(template) == set(FUNCTIONS) == set(runner.routes)
    for name, routes in runner.routes.items():
        assert _operations(routes) == template[name], name


def test_the_runner_sends_each_template_route_to_its_function() -> None:
    runner = build_app()
    assert isinstance(runner, FunctionRouter)
    for name, routes in http_routes_by_function().items():
        for method, path in routes:
            assert runner.function_for(_request(method, path)) == name, (method, path)


def test_no_two_functions_claim_the_same_route() -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, routes in http_routes_by_function().items():
        for route in routes:
            assert route not in seen, f"{route} in {name} and {seen[route]}"
            seen[route] = name

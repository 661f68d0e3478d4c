"""The local runner routes exactly as API Gateway does, per template.yaml."""

from fastapi.routing import APIRoute

from local_runner.app import FUNCTIONS, function_routers
from tests.support.sam_template import http_routes_by_function


def _router_routes(router) -> set[tuple[str, str]]:
    return {(method, route.path) for route in router.routes if isinstance(route, APIRoute)
            for method in route.methods}


def test_every_function_serves_exactly_its_template_routes() -> None:
    template = http_routes_by_function()
    routers = function_routers()
    assert set(template) == set(FUNCTIONS)
    for name, router in routers.items():
        assert _router_routes(router) == template[name], name


def test_no_two_functions_claim_the_same_route() -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, routes in http_routes_by_function().items():
        for route in routes:
            assert route not in seen, f"{route} in {name} and {seen[route]}"
            seen[route] = name

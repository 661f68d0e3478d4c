"""Sends each request to the function that owns its path, as API Gateway does by template.yaml.

The runner serves a function through the very app its Lambda runs (`functions/<name>/app.py`'s
`app`, the object Mangum wraps): its middleware, error handlers and routes, nothing added.
A request goes to

1. the function with a route for its path and method;
2. else the function with a route for its path (it answers the 405, or the CORS preflight);
3. else the runner's own app, if one of its routes matches (playground, /metrics, docs);
4. else the function with a route for the path with or without its trailing slash (it
   answers the redirect);
5. else the function that alone has routes under the path's first segment (`/v1/...` is
   openai_api's: its 404 in OpenAI's shape);
6. else the runner's own app (its 404, its preflight answer).

Steps 2 to 6 keep the answers the runner gave as one app of every route (API Gateway
itself answers 404 to a request no route takes). A function app's `/docs` and
`/openapi.json` are not routed to it: the runner's own cover every function. Where two
functions served one path with different methods, the first would answer the 405.

The lifespan runs each function app's lifespan (ASGI's startup and shutdown), then the
runner's own, and shuts them down in reverse order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from fastapi import FastAPI
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CHOSEN_PATHS = 4096
"""Request paths whose function is remembered (paths carrying ids are many: past this the
memo starts over)."""


class Route(Protocol):
    """A route as the app serves it: a Starlette route, or FastAPI's view of one an
    included router holds."""

    @property
    def path(self) -> str | None: ...
    @property
    def methods(self) -> set[str] | None: ...
    def matches(self, scope: Scope) -> tuple[Match, Scope]: ...


def served_routes(routes: Iterable[BaseRoute]) -> list[Route]:
    """Each route the app answers, an included router's one by one: newer FastAPI keeps
    `include_router`'s routes inside one entry of `app.routes`, older copies them there."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return [cast(Route, route) for route in routes]
    return [cast(Route, context) for context in iter_route_contexts(list(routes))]


class FunctionRouter:
    """ASGI app: each function's requests to its own app, the rest to the runner's."""

    def __init__(self, functions: Mapping[str, FastAPI], runner: FastAPI,
                 not_routed: frozenset[str] = frozenset()) -> None:
        """`functions` in dispatch order; `not_routed`: route paths every function app has
        that the runner answers itself (its docs and schema)."""
        self.functions = dict(functions)
        self.runner = runner
        self.routes: dict[str, list[Route]] = {
            name: [route for route in served_routes(app.routes) if route.path not in not_routed]
            for name, app in self.functions.items()
        }
        self._runner_routes = served_routes(runner.routes)
        owners: dict[str, set[str]] = {}
        for name, routes in self.routes.items():
            for route in routes:
                owners.setdefault(_first_segment(route.path or ""), set()).add(name)
        self._segment_owner = {segment: next(iter(names)) for segment, names in owners.items()
                               if segment and len(names) == 1}
        self._chosen: dict[tuple[str, str, str, str], str | None] = {}
        """Requests seen, by type, method, root path and path: the same request always goes
        to the same function, and a chat turn's path is always `/api/chat`."""

    def function_for(self, scope: Scope) -> str | None:
        """The name of the function that answers this request; None: the runner's own app."""
        key = (scope["type"], scope.get("method", ""), scope.get("root_path", ""), scope.get("path", ""))
        if key in self._chosen:
            return self._chosen[key]
        if len(self._chosen) >= CHOSEN_PATHS:
            self._chosen.clear()
        chosen = self._chosen[key] = self._match(scope)
        return chosen

    def _match(self, scope: Scope) -> str | None:
        partial: str | None = None
        for name, routes in self.routes.items():
            for route in routes:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    return name
                if match is Match.PARTIAL and partial is None:
                    partial = name
        if partial is not None:
            return partial
        if any(route.matches(scope)[0] is not Match.NONE for route in self._runner_routes):
            return None
        if scope["type"] == "http" and (toggled := _slash_toggled(scope)) is not None:
            for name, routes in self.routes.items():
                if any(route.matches(toggled)[0] is not Match.NONE for route in routes):
                    return name
        return self._segment_owner.get(_first_segment(_route_path(scope)))

    def app_for(self, scope: Scope) -> ASGIApp:
        name = self.function_for(scope)
        return self.runner if name is None else self.functions[name]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app_for(scope)(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        apps: Sequence[ASGIApp] = [*self.functions.values(), self.runner]
        lifespans: list[_Lifespan] = []
        started: list[_Lifespan] = []
        failed: _Lifespan | None = None
        await receive()  # lifespan.startup
        try:
            async with anyio.create_task_group() as group:
                for app in apps:
                    lifespans.append(lifespan := _Lifespan(app, scope))
                    group.start_soon(lifespan.run)
                    if (await lifespan.ask("lifespan.startup"))["type"] != "lifespan.startup.complete":
                        failed = lifespan
                        break
                    started.append(lifespan)
                if failed is None:
                    await send({"type": "lifespan.startup.complete"})
                    await receive()  # lifespan.shutdown
                for lifespan in reversed(started):
                    if (await lifespan.ask("lifespan.shutdown"))["type"] != "lifespan.shutdown.complete":
                        failed = failed or lifespan
                    lifespan.close()
                if failed is not None:
                    failed.close()
        finally:
            for lifespan in lifespans:
                lifespan.close()
        if failed is None:
            await send({"type": "lifespan.shutdown.complete"})
            return
        # As Starlette does: the failure message, then the app's own exception.
        phase = "shutdown" if failed in started else "startup"
        await send({"type": f"lifespan.{phase}.failed", "message": failed.message})
        raise failed.exception or RuntimeError(failed.message)


class _Lifespan:
    """One app's side of the ASGI lifespan conversation: `ask` sends it an event and
    waits for its answer."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self.app = app
        # Its own scope (apps write "app" and "router" into it), sharing the server's state.
        self.scope = dict(scope)
        self._events: tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]] = (
            anyio.create_memory_object_stream[Message](1))
        self._answers: tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]] = (
            anyio.create_memory_object_stream[Message](1))
        self.message = "its lifespan ended without answering"
        self.exception: Exception | None = None

    async def run(self) -> None:
        events, answers = self._events[1], self._answers[0]
        async with events, answers:
            try:
                await self.app(self.scope, events.receive, answers.send)
            except Exception as error:
                self.exception = error

    async def ask(self, event: str) -> Message:
        """The app's answer; `<event>.failed` if its lifespan has ended instead."""
        try:
            await self._events[0].send({"type": event})
            answer = await self._answers[1].receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            answer = {"type": f"{event}.failed", "message": self.message}
        if answer["type"].endswith(".failed"):
            self.message = answer.get("message") or self.message
        return answer

    def close(self) -> None:
        """Ends the conversation: an app still waiting for an event gets EndOfStream."""
        self._events[0].close()
        self._answers[1].close()


def _route_path(scope: Scope) -> str:
    """The path below the app's `root_path`, as Starlette's routes match it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path):]
    return path


def _first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.startswith("/") and len(path) > 1 else ""


def _slash_toggled(scope: Scope) -> Scope | None:
    """The scope with the trailing slash added or removed, as Starlette tries for its redirect."""
    path = _route_path(scope)
    if path == "/":
        return None
    toggled = scope["path"].rstrip("/") if path.endswith("/") else scope["path"] + "/"
    return {**scope, "path": toggled}

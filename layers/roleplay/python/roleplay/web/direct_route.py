"""A route whose common request skips FastAPI's per-request machinery.

FastAPI's handler reads the body, decodes it with `json`, solves the dependencies
(the user, the background tasks, each header), validates the body, then serializes the
answer: about a tenth of a text turn's CPU (issue 30). A route declared with
`route_class_override=direct_json_route(Model, serve)` keeps its FastAPI declaration
(OpenAPI, docs, every error) and has its request served by `serve` first: a JSON body
that validates as `Model` is handed to it with the request and a `BackgroundTasks`.
Anything else (another content type, a body that does not validate, `serve` answering
None) goes to FastAPI's own handler, so every refusal is FastAPI's, word for word.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import BackgroundTasks, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

ModelT = TypeVar("ModelT", bound=BaseModel)

Serve = Callable[[ModelT, Request, BackgroundTasks], Awaitable[BaseModel | Response | None]]
"""The body, the request and the answer's background tasks → the endpoint's answer (a
model, sent as JSON by its aliases as FastAPI sends a `response_model`, or a response);
None: let FastAPI's handler answer."""


def media_type(request: Request) -> str:
    """The request's `Content-Type` without its parameters, lower-cased ('' when none)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def direct_json_route(model: type[ModelT], serve: Serve[ModelT]) -> type[APIRoute]:
    class DirectJsonRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            standard = super().get_route_handler()

            async def handler(request: Request) -> Response:
                if media_type(request) != "application/json":
                    return await standard(request)
                try:
                    body = model.model_validate_json(await request.body())
                except HTTPException:
                    raise  # a body over the size limit: its 413, as FastAPI lets it through
                except Exception:  # invalid, or the client gone mid-body: FastAPI's answer
                    return await standard(request)
                background = BackgroundTasks()
                answer = await serve(body, request, background)
                if answer is None:
                    return await standard(request)
                if not isinstance(answer, Response):
                    return Response(answer.model_dump_json(by_alias=True),
                                    media_type="application/json", background=background)
                if answer.background is None:
                    answer.background = background
                return answer

            return handler

    return DirectJsonRoute

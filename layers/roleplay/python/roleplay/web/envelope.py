"""The one JSON shape every endpoint answers with, as in the design document."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from roleplay.core import request_context

DataT = TypeVar("DataT")


class Envelope(BaseModel, Generic[DataT]):
    success: Literal[True] = True
    data: DataT


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody


def ok(data: DataT) -> Envelope[DataT]:
    return Envelope[DataT](data=data)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error envelope, with the request's id (the one a user can quote) when serving one."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    record = request_context.current()
    if record is not None:
        body["request_id"] = record.request_id
        record.fields["error_code"] = code
    return {"success": False, "error": body}


ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 502, 503, 504)
_ERROR_SCHEMA = {"content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope} if status == ERROR_STATUSES[0] else _ERROR_SCHEMA
    for status in ERROR_STATUSES
}
"""The error answers every route documents. One names the model, which puts
`ErrorEnvelope` in the schema's components; the others refer to it as that one does.
FastAPI builds a model field (a TypeAdapter) for each `model` of each route's responses
when the route is declared: 11 a route made 242 of chat's 280 (issue 30's cold start)."""

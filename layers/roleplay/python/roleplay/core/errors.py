"""Errors a handler raises on purpose; each maps to one HTTP status and error code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class ApiError(Exception):
    """An error the client should see, in the JSON envelope, with a stable code."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = code or self.code
        self.headers = dict(headers or {})
        self.details = details


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(ApiError):
    status_code = 429
    code = "too_many_requests"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"


class UpstreamError(ApiError):
    """The GPU service answered, but with an error or something unreadable."""

    status_code = 502
    code = "upstream_error"


class UpstreamUnavailable(ApiError):
    """The GPU service could not be reached at all."""

    status_code = 502
    code = "upstream_unavailable"


class UpstreamTimeout(ApiError):
    """The GPU service took longer than its read timeout."""

    status_code = 504
    code = "upstream_timeout"


class NotConfigured(ApiError):
    """A feature needs a setting that this deployment does not have."""

    status_code = 503
    code = "not_configured"

"""Real API Gateway HTTP API (payload 2.0) events, as Lambda receives them."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode


def http_api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    route_key: str | None = None,
) -> dict[str, Any]:
    raw_body = None if body is None else json.dumps(body)
    all_headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com",
                   "user-agent": "pytest", **(headers or {})}
    if raw_body is not None:
        all_headers.setdefault("content-type", "application/json")
        all_headers["content-length"] = str(len(raw_body.encode()))
    return {
        "version": "2.0",
        "routeKey": route_key or f"{method} {path}",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": all_headers,
        "queryStringParameters": query or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "pytest"},
            "requestId": "req-1",
            "routeKey": route_key or f"{method} {path}",
            "stage": "$default",
            "time": "24/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795521600000,
        },
        "body": raw_body,
        "isBase64Encoded": False,
    }


LAMBDA_CONTEXT = SimpleNamespace(
    function_name="test", memory_limit_in_mb=512, aws_request_id="req-1",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:test",
    get_remaining_time_in_millis=lambda: 30000,
)


def invoke_raw(handler: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Calls a Mangum handler as the Lambda runtime would (its main thread has an event
    loop, which an earlier `asyncio.run` in this process may have left unset); returns the
    handler's answer as API Gateway receives it."""
    try:
        loop = asyncio.get_event_loop()
        if loop.is_closed():
            raise RuntimeError
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    result: dict[str, Any] = handler(event, LAMBDA_CONTEXT)
    return result


def invoke(handler: Any, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """`invoke_raw`, answered as (status, JSON body)."""
    result = invoke_raw(handler, event)
    body = result["body"]
    if result.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return result["statusCode"], json.loads(body) if body else {}

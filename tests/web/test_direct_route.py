"""`web.direct_route`: a route's common request served without FastAPI's dependency
solving answers exactly as FastAPI's own handler does, and everything else is FastAPI's.

FastAPI's handler is reached with a `+json` media type (FastAPI reads it as JSON; the
direct path takes `application/json` alone), so both answer the same request here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from roleplay.web.direct_route import direct_json_route
from roleplay.web.envelope import Envelope, ok
from roleplay.web.function_app import create_function_app
from tests.support.upstream_server import serve

VIA_FASTAPI = {"content-type": "application/vnd.test+json"}


class Greeting(BaseModel):
    name: str = Field(min_length=1)
    times: int = 1


class Greeted(BaseModel):
    text: str
    score: float
    tags: list[str]
    note: str | None = None


def _app(served: list[str], done: list[str], *, serve_none: bool = False) -> TestClient:
    router = APIRouter()

    async def greet(body: Greeting, background: BackgroundTasks) -> Envelope[Greeted]:
        background.add_task(done.append, body.name)
        return ok(Greeted(text=f"안녕, {body.name}! " * body.times, score=0.1 + 0.2,
                          tags=["ㄱ", "b"]))

    async def direct(body: Greeting, request: Request,
                     background: BackgroundTasks) -> Envelope[Greeted] | None:
        served.append(body.name)
        return None if serve_none else await greet(body, background)

    router.add_api_route("/greet", greet, methods=["POST"], response_model=Envelope[Greeted],
                         route_class_override=direct_json_route(Greeting, direct))
    return TestClient(create_function_app("test", [router]))


def test_the_direct_answer_is_fastapis_byte_for_byte() -> None:
    served: list[str] = []
    done: list[str] = []
    client = _app(served, done)
    direct = client.post("/greet", json={"name": "민지", "times": 2})
    standard = client.post("/greet", content='{"name": "민지", "times": 2}', headers=VIA_FASTAPI)
    assert direct.status_code == standard.status_code == 200
    assert direct.content == standard.content
    assert direct.headers["content-type"] == standard.headers["content-type"]
    assert served == ["민지"], "only the application/json request took the direct path"
    assert done == ["민지", "민지"], "both ran their background task"


def test_a_body_that_does_not_validate_is_fastapis_422() -> None:
    served: list[str] = []
    client = _app(served, [])
    for body in ('{"name": ""}', '{"name": "a", "times": "x"}', "{not json", ""):
        direct = client.post("/greet", content=body, headers={"content-type": "application/json"})
        standard = client.post("/greet", content=body, headers=VIA_FASTAPI)
        assert direct.status_code == 422, direct.text
        assert direct.json()["error"]["code"] == "validation_error"
        assert direct.json()["error"]["message"] == standard.json()["error"]["message"]
    assert served == []


def test_a_request_the_direct_handler_declines_goes_to_fastapi() -> None:
    served: list[str] = []
    done: list[str] = []
    answer = _app(served, done, serve_none=True).post("/greet", json={"name": "b"})
    assert answer.status_code == 200 and answer.json()["data"]["text"] == "안녕, b! "
    assert served == ["b"] and done == ["b"]


def _upstream() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> dict[str, object]:
        return {"choices": [{"message": {"role": "assistant", "content": "응!"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 2}}

    return app


def test_a_chat_turn_answers_alike_through_either_handler(settings_env: Callable[..., None],
                                                          client: TestClient) -> None:
    with serve(_upstream()) as url:
        settings_env(LLM_BASE_URL=url)
        turn = {"persona": "밝은 소녀", "messages": [{"role": "user", "content": "안녕"}]}
        direct = client.post("/api/chat", json=turn)
        standard = client.post("/api/chat", json=turn, headers=VIA_FASTAPI)
        too_long = client.post("/api/chat", json=turn, headers={"Idempotency-Key": "k" * 201})
    assert direct.status_code == standard.status_code == 200, (direct.text, standard.text)
    one, other = direct.json()["data"], standard.json()["data"]
    assert one.keys() == other.keys()
    assert {k: v for k, v in one.items() if not k.endswith(("id", "url"))} == {
        k: v for k, v in other.items() if not k.endswith(("id", "url"))}
    assert too_long.status_code == 422
    assert too_long.json()["error"]["message"].startswith("header.Idempotency-Key")


def test_a_body_over_the_size_limit_is_413_on_the_direct_path(settings_env: Callable[..., None],
                                                              client: TestClient) -> None:
    """Sent without a length (chunked), so the limit is met while the route reads it."""
    settings_env(MAX_BODY_BYTES="2048")
    body = json.dumps({"messages": [{"role": "user", "content": "가" * 2000}]}).encode()

    def pieces() -> Iterator[bytes]:
        yield from (body[n:n + 500] for n in range(0, len(body), 500))

    answer = client.post("/api/chat", content=pieces(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large"

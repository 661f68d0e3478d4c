"""Schemathesis over the local runner's OpenAPI schema: no 5xx, every error in the envelope,
and every answer as the schema declares it.

Each operation in the spec is two test items, anonymous and signed in (JWT_SECRET set,
a bearer token on every request). Schemathesis generates valid and invalid requests for
it (its coverage phase, then Hypothesis fuzzing) and every response goes through
`CHECKS`: no 5xx, every 4xx/5xx the error envelope, and status, content type and body as
the schema declares them. The upstreams are real HTTP servers that always answer well
(the scripted LLM of tests/support/fake_llm.py and the GPT-SoVITS stand-in) and the
concurrent-user cap is out of reach, so any 5xx is Server B's own.

Random ids almost never name anything, so on their own the requests would stop at 404
and the paths behind it (changing a character, reading a session, playing audio, a turn
with a stored character) would go unfuzzed. Each test item therefore seeds a character,
a session and an audio file, and the hooks below let the fuzzer swap those real ids (and
a real cursor, a real voice, some text) into what it generated; the rest of each request
stays generated.

`FUZZ_EXAMPLES=500` fuzzes harder than the default run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local_runner.app import build_app
from tests.llm.test_models import VLLM_MODELS
from tests.speech.test_tts_api import VOICES
from tests.support.fake_llm import FakeLLM
from tests.support.gpt_sovits_server import FakeGptSovits
from tests.support.sign_in import SECRET, bearer
from tests.support.upstream_server import serve

APP = build_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Card import takes CHARX zips; their bytes go as generated, like any binary upload.
schemathesis.serializer.alias("application/zip", "application/octet-stream")

KNOWN: dict[str, Any] = {}
"""Ids that exist in the current test item's Redis keys: `seed` fills it."""

DROP = object()
"""As an alternative value: the field is left out."""


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The scripted LLM (which also lists its models) and the GPT-SoVITS stand-in with two
    voices, once for the whole module."""
    voices_file = tmp_path_factory.mktemp("voices") / "voices.json"
    voices_file.write_text(json.dumps(VOICES, ensure_ascii=False))
    llm = FakeLLM().app()
    llm.get("/v1/models")(lambda: VLLM_MODELS)
    with serve(llm) as llm_url, serve(FakeGptSovits().build()) as tts_url:
        yield {"LLM_BASE_URL": llm_url, "TTS_BASE_URL": tts_url, "VOICES_FILE": str(voices_file)}


@pytest.fixture(autouse=True, params=["anonymous", "signed_in"])
def seed(request: pytest.FixtureRequest, settings_env: Callable[..., None],
         upstreams: dict[str, str]) -> Iterator[None]:
    """The upstreams, a cap no run reaches, and one of everything an id can name; each
    operation is fuzzed without sign-in and again as a signed-in user (a bearer JWT)."""
    settings_env(**upstreams, MAX_CONCURRENT_USERS="1000000")
    headers: dict[str, str] = {}
    if request.param == "signed_in":
        settings_env(JWT_SECRET=SECRET)
        headers = bearer("fuzzer")
    with TestClient(APP, headers=headers) as client:

        def data(response: Any) -> Any:
            assert response.status_code in (200, 201), response.text
            return response.json()["data"]

        first = data(client.post("/api/characters", json={
            "name": "민지", "persona": "밝은 바리스타", "first_message": "어서 와!",
            "voice_id": "minji"}))
        data(client.post("/api/characters", json={"name": "서준"}))
        turn = data(client.post("/api/chat", json={
            "character_id": first["id"], "tts_enabled": False,
            "messages": [{"role": "user", "content": "안녕!"}]}))
        speech = data(client.post("/api/tts", json={"text": "반가워요."}))
        page = data(client.get("/api/characters", params={"limit": 1}))
    KNOWN.update(character_id=first["id"], session_id=turn["session_id"],
                 file_id=speech["file_id"], cursor=page["next_cursor"], headers=headers)
    yield
    KNOWN.clear()


def _swap(generated: Any, alternatives: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """`generated` as it is, or with some of its fields replaced by one of their
    alternatives (a value, a strategy, or `DROP`)."""
    if not isinstance(generated, dict):
        return st.just(generated)

    def strategy(value: Any) -> st.SearchStrategy[Any]:
        return value if isinstance(value, st.SearchStrategy) else st.just(value)

    fields = {
        name: st.one_of(st.just(generated.get(name, DROP)), *map(strategy, values))
        for name, values in alternatives.items()
    }

    def apply(chosen: dict[str, Any]) -> dict[str, Any]:
        result = {name: value for name, value in generated.items() if name not in chosen}
        result.update({name: value for name, value in chosen.items() if value is not DROP})
        return result

    return st.fixed_dictionaries(fields).map(apply)


TEXT = st.text(min_size=1, max_size=60)


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext,
                            path_parameters: dict[str, Any]) -> st.SearchStrategy[Any]:
    known = {name: [KNOWN[name]] for name in path_parameters or {} if name in KNOWN}
    return _swap(path_parameters, known)


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: dict[str, Any]) -> st.SearchStrategy[Any]:
    if context.operation is not None and context.operation.label == "GET /api/characters":
        return _swap(query, {"cursor": [KNOWN["cursor"], DROP]})
    return st.just(query)


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    label = context.operation.label if context.operation is not None else ""
    if label == "POST /api/chat":
        return _swap(body, {
            "character_id": [KNOWN["character_id"], DROP],
            "session_id": [KNOWN["session_id"], DROP],
            "messages": [st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}),
                                  min_size=1, max_size=3)],
            "max_tokens": [DROP],
        })
    if label == "POST /api/tts":
        return _swap(body, {"text": [TEXT], "voice_id": [st.sampled_from(["default", "minji"])]})
    if label == "POST /api/chat/release":
        return _swap(body, {"session_id": [KNOWN["session_id"]]})
    return st.just(body)


def envelope_errors(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                    case: schemathesis.Case) -> bool | None:
    """Every 4xx and 5xx answers `{"success": false, "error": {"code", "message"}}`, or
    under `/v1` OpenAI's `{"error": {"message", "type", "param", "code"}}`."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} is not JSON: {response.content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    if case.path.startswith("/v1/"):
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, \
            f"{response.status_code} is not OpenAI's error shape: {body!r}"
        return None
    assert isinstance(body, dict) and body.get("success") is False and isinstance(error, dict) \
        and isinstance(error.get("code"), str) and isinstance(error.get("message"), str), \
        f"{response.status_code} is not the error envelope: {body!r}"
    return None


CHECKS = [not_a_server_error, envelope_errors, response_schema_conformance, status_code_conformance,
          content_type_conformance]


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
    deadline=None,
    # `seed` is function-scoped on purpose: one item's examples share its Redis keys and
    # ids, and the examples of one operation may well build on each other.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors_and_errors_are_enveloped(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=KNOWN["headers"], checks=CHECKS)

"""Each function's Lambda handler, called with a real HTTP API v2 event, answers as the
local runner does."""

import importlib

from fastapi.testclient import TestClient

from tests.support.lambda_events import LAMBDA_CONTEXT, http_api_event, invoke

SAME_REQUEST_ID = {"X-Request-ID": "req-1"}
"""The API Gateway request id of tests/support/lambda_events.py, so error envelopes compare equal."""


def _handler(name: str):
    return importlib.import_module(f"functions.{name}.app").handler


def test_characters_handler_matches_the_local_runner(client: TestClient) -> None:
    status, created = invoke(_handler("characters"),
                             http_api_event("POST", "/api/characters", body={"name": "민지"}))
    assert status == 201
    character_id = created["data"]["id"]

    status, via_lambda = invoke(_handler("characters"),
                                http_api_event("GET", f"/api/characters/{character_id}",
                                               route_key="GET /api/characters/{character_id}"))
    via_runner = client.get(f"/api/characters/{character_id}")
    assert status == via_runner.status_code == 200
    assert via_lambda == via_runner.json()

    status, listed = invoke(_handler("characters"),
                            http_api_event("GET", "/api/characters", query={"limit": "5"}))
    assert status == 200
    assert listed == client.get("/api/characters", params={"limit": 5}).json()


def test_characters_handler_refuses_bad_input_in_the_envelope(client: TestClient) -> None:
    event = http_api_event("POST", "/api/characters", body={"persona": "no name"})
    status, body = invoke(_handler("characters"), event)
    runner = client.post("/api/characters", json={"persona": "no name"}, headers=SAME_REQUEST_ID)
    assert status == runner.status_code == 422
    assert body == runner.json()


def test_health_handler_matches_the_local_runner(client: TestClient) -> None:
    status, body = invoke(_handler("health"), http_api_event("GET", "/api/health"))
    runner = client.get("/api/health")
    assert status == runner.status_code == 200
    assert body["data"]["checks"]["redis"]["status"] == "ok"
    assert body["data"]["status"] == runner.json()["data"]["status"]


def test_voices_handler_matches_the_local_runner(client: TestClient) -> None:
    status, body = invoke(_handler("voices"), http_api_event("GET", "/api/tts/voices"))
    assert status == 200
    assert body == client.get("/api/tts/voices").json()
    assert body["data"][0]["id"] == "default"


def test_models_handler_reports_a_missing_upstream_like_the_runner(client: TestClient) -> None:
    status, body = invoke(_handler("models"), http_api_event("GET", "/api/chat/models"))
    runner = client.get("/api/chat/models", headers=SAME_REQUEST_ID)
    assert status == runner.status_code == 503
    assert body == runner.json()


def test_handler_answers_three_invocations_in_a_row(client: TestClient) -> None:
    handler = _handler("health")
    for _ in range(3):
        status, body = invoke(handler, http_api_event("GET", "/api/health"))
        assert status == 200 and body["success"] is True


def test_chat_handler_holds_a_conversation_like_the_local_runner(settings_env,
                                                                 client: TestClient) -> None:
    from tests.chat.test_chat import _recording_upstream
    from tests.support.upstream_server import serve

    seen: list[dict] = []
    with serve(_recording_upstream(seen, reply="반가워!")) as url:
        settings_env(LLM_BASE_URL=url)
        status, first = invoke(_handler("chat"), http_api_event("POST", "/api/chat", body={
            "messages": [{"role": "user", "content": "안녕"}], "persona": "밝은 소녀"}))
        assert status == 200, first
        sid = first["data"]["session_id"]
        # the same anonymous client: Lambda's sourceIp is its address (no cookies here)
        with TestClient(client.app, client=("203.0.113.7", 50000)) as same_address:
            via_runner = same_address.post("/api/chat", json={
                "session_id": sid, "messages": [{"role": "user", "content": "뭐 해?"}]})
    assert first["data"]["content"] == "반가워!"
    assert via_runner.status_code == 200
    status, session = invoke(_handler("chat"), http_api_event(
        "GET", f"/api/chat/sessions/{sid}", route_key="GET /api/chat/sessions/{session_id}"))
    assert status == 200
    assert [m["content"] for m in session["data"]["messages"]] == ["안녕", "반가워!", "뭐 해?",
                                                                  "반가워!"]
    with TestClient(client.app, client=("203.0.113.7", 50000)) as same_address:
        assert session == same_address.get(f"/api/chat/sessions/{sid}").json()
    assert client.get(f"/api/chat/sessions/{sid}").status_code == 404, "another client's"


def test_chat_handler_refuses_bad_input_in_the_envelope(client: TestClient) -> None:
    event = http_api_event("POST", "/api/chat", body={"messages": "hello"})
    status, body = invoke(_handler("chat"), event)
    assert status == 422 and body["success"] is False
    assert body == client.post("/api/chat", json={"messages": "hello"}, headers=SAME_REQUEST_ID).json()


def test_tts_handler_speaks_like_the_local_runner(client: TestClient) -> None:
    status, body = invoke(_handler("tts"), http_api_event("POST", "/api/tts",
                                                          body={"text": "안녕하세요."}))
    assert status == 200, body
    audio = client.get(body["data"]["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    status, refused = invoke(_handler("tts"), http_api_event("POST", "/api/tts", body={"text": " "}))
    assert status == 400
    assert refused == client.post("/api/tts", json={"text": " "}, headers=SAME_REQUEST_ID).json()


def test_a_png_card_goes_in_and_out_through_api_gateway_as_base64(client: TestClient) -> None:
    """HTTP API hands Lambda a binary body base64-encoded; Mangum must decode it, and
    base64-encode the PNG export on the way out."""
    import base64

    from tests.support.card_files import b64_json, png_card, png_texts, v3_card

    card = png_card(("ccv3", b64_json(v3_card())))
    event = http_api_event("POST", "/api/characters/import",
                           headers={"content-type": "image/png",
                                    "content-length": str(len(card))})
    event["body"], event["isBase64Encoded"] = base64.b64encode(card).decode(), True
    status, created = invoke(_handler("characters"), event)
    assert status == 201, created
    character_id = created["data"]["id"]

    result = _handler("characters")(http_api_event(
        "GET", f"/api/characters/{character_id}/export", query={"format": "png"},
        route_key="GET /api/characters/{character_id}/export"), LAMBDA_CONTEXT)
    assert result["statusCode"] == 200
    assert result["isBase64Encoded"] is True
    exported = base64.b64decode(result["body"])
    assert png_texts(exported)["ccv3"]["data"]["nickname"] == "민짱"
    assert client.get(f"/api/characters/{character_id}").json()["data"]["nickname"] == "민짱"


def test_users_handler_keeps_the_persona_like_the_local_runner(client: TestClient) -> None:
    event = http_api_event("PUT", "/api/users/me/persona", body={"name": "철수"})
    status, body = invoke(_handler("users"), event)
    assert status == 200, body
    # the same anonymous client (API Gateway's source address) reads it back
    assert invoke(_handler("users"), http_api_event("GET", "/api/users/me/persona")) == (200, body)
    assert client.get("/api/users/me/persona").json()["data"] is None, "another client"

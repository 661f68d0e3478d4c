"""Speech through the HTTP API: /api/tts, /api/audio, voices, and speech inside chat.

eSpeak NG (the embedded default) speaks for real; GPT-SoVITS is the api_v2 stand-in
in tests/support/gpt_sovits_server.py, served over real HTTP.
"""

from __future__ import annotations

import io
import json
import time
import wave
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.gpt_sovits_server import FakeGptSovits
from tests.support.sse import sse_events
from tests.support.upstream_server import closed_port_url, serve

VOICES = {"voices": [
    {"id": "default", "name": "기본", "language": "ko", "gender": "female",
     "ref_audio_path": "/srv/voices/default.wav", "prompt_text": "안녕하세요.", "prompt_lang": "ko"},
    {"id": "minji", "name": "민지", "language": "ko", "gender": "female",
     "ref_audio_path": "/srv/voices/minji.wav", "prompt_text": "반가워요.", "prompt_lang": "ko",
     "gpt_weights": "GPT_weights_v2/minji.ckpt", "sovits_weights": "SoVITS_weights_v2/minji.pth"},
]}


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


@pytest.fixture
def sovits_voices() -> dict[str, object]:
    """The voices of the GPT-SoVITS stand-in (`sovits`, tests/conftest.py)."""
    return VOICES


def test_tts_with_the_embedded_engine_gives_a_playable_url(client: TestClient) -> None:
    response = client.post("/api/tts", json={"text": "안녕하세요, 만나서 반가워요."})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert set(data) >= {"audio_url", "duration", "file_id"}
    audio = client.get(data["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert abs(_wav_seconds(audio.content) - data["duration"]) < 0.01
    assert data["duration"] > 0.5


def test_tts_can_return_the_audio_itself(client: TestClient) -> None:
    response = client.post("/api/tts", json={"text": "Hello there.", "language": "en",
                                             "return_binary": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert abs(_wav_seconds(response.content) - float(response.headers["X-Audio-Duration"])) < 0.01


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"text": "   "}, 400, "empty_text"),
    ({"text": "가" * 1001}, 413, "text_too_long"),
    ({"text": "hi", "voice_id": "nobody"}, 404, "voice_not_found"),
    ({"text": "hi", "voice_id": "../../etc/passwd"}, 422, "validation_error"),
    ({"text": "hi", "ref_audio_path": "/etc/passwd"}, 422, "validation_error"),
    ({"text": "hi", "speed": 0}, 422, "validation_error"),
    ({"text": "hi", "streaming_mode": 7}, 422, "validation_error"),
    ({}, 422, "validation_error"),
])
def test_bad_tts_requests_are_4xx(client: TestClient, body: dict, status: int, code: str) -> None:
    response = client.post("/api/tts", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_or_malformed_audio_ids_are_4xx(client: TestClient) -> None:
    assert client.get("/api/audio/" + "0" * 32).json()["error"]["code"] == "audio_not_found"
    assert client.get("/api/audio/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/api/audio/bad.id").status_code == 422


def test_voices_come_from_the_voices_file_without_paths(sovits: FakeGptSovits,
                                                        client: TestClient) -> None:
    voices = client.get("/api/tts/voices").json()["data"]
    assert [v["id"] for v in voices] == ["default", "minji"]
    assert all("ref_audio_path" not in v and "gpt_weights" not in v for v in voices)


def test_tts_through_gpt_sovits_uses_the_voice_and_its_weights(sovits: FakeGptSovits,
                                                               client: TestClient) -> None:
    response = client.post("/api/tts", json={"text": "안녕", "voice_id": "minji", "speed": 1.25})
    assert response.status_code == 200, response.text
    sent = sovits.requests[-1]
    assert sent["ref_audio_path"] == "/srv/voices/minji.wav"
    assert sent["text_lang"] == "ko" and sent["speed_factor"] == 1.25
    assert sovits.loaded == ("GPT_weights_v2/minji.ckpt", "SoVITS_weights_v2/minji.pth")


def test_gpt_sovits_refusing_is_a_502_with_its_message(sovits: FakeGptSovits,
                                                       client: TestClient) -> None:
    sovits.ref_audio_paths = set()
    response = client.post("/api/tts", json={"text": "안녕"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


def test_gpt_sovits_down_is_a_502(settings_env, sovits: FakeGptSovits, client: TestClient) -> None:
    settings_env(TTS_BASE_URL=closed_port_url())
    response = client.post("/api/tts", json={"text": "안녕"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_tts_is_capped_like_chat(fake_upstream, settings_env, client: TestClient) -> None:
    settings_env(MAX_CONCURRENT_USERS="1")
    assert client.post("/api/chat", json={"session_id": "s-holder", "tts_enabled": False,
                                          "messages": [{"role": "user", "content": "hi"}]}
                       ).status_code == 200
    assert client.post("/api/tts", json={"text": "hi", "session_id": "s-holder"}).status_code == 200
    assert client.post("/api/tts", json={"text": "hi", "session_id": "s-other"}).status_code == 200, \
        "anonymous speech counts as its client, whatever session it names"
    with TestClient(client.app) as other_client:
        other_client.get("/api/chat/sessions/first-contact")  # its own anonymous cookie
        refused = other_client.post("/api/tts", json={"text": "hi"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_users"


def _say(client: TestClient, **extra: object) -> dict:
    response = client.post("/api/chat", json={
        "messages": [{"role": "user", "content": "안녕"}], **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_realtime_mode_answers_with_the_spoken_reply(fake_upstream, client: TestClient) -> None:
    fake_upstream.reply = "*손을 흔들며* 안녕! 오늘 어땠어?"
    data = _say(client, tts_mode="realtime")
    assert data["tts_error"] is None
    audio = client.get(data["audio_url"])
    assert audio.status_code == 200 and _wav_seconds(audio.content) > 0.5


def test_stage_directions_are_not_sent_to_the_voice(fake_upstream, sovits: FakeGptSovits,
                                                    client: TestClient) -> None:
    fake_upstream.reply = "*손을 흔들며* 안녕! (웃으며) 오늘 어땠어?"
    _say(client)
    assert [r["text"] for r in sovits.requests] == ["안녕! 오늘 어땠어?"]


def test_on_click_mode_synthesizes_nothing(fake_upstream, sovits: FakeGptSovits,
                                           client: TestClient) -> None:
    data = _say(client, tts_mode="on_click")
    assert data["audio_url"] is None and data["tts_error"] is None
    assert sovits.requests == []
    assert _say(client, tts_enabled=False)["audio_url"] is None


def test_a_characters_voice_speaks_its_replies(fake_upstream, sovits: FakeGptSovits,
                                              client: TestClient) -> None:
    minji = client.post("/api/characters", json={"name": "민지", "voice_id": "minji"}).json()["data"]
    _say(client, character_id=minji["id"])
    assert sovits.requests[-1]["ref_audio_path"] == "/srv/voices/minji.wav"
    lost = client.post("/api/characters", json={"name": "유령", "voice_id": "gone"}).json()["data"]
    _say(client, character_id=lost["id"])
    assert sovits.requests[-1]["ref_audio_path"] == "/srv/voices/default.wav", "falls back"


def test_tts_down_never_fails_the_chat(fake_upstream, sovits: FakeGptSovits, settings_env,
                                       client: TestClient) -> None:
    settings_env(TTS_BASE_URL=closed_port_url())
    data = _say(client)
    assert data["content"] == fake_upstream.reply
    assert data["audio_url"] is None
    assert data["tts_error"]["code"] == "upstream_unavailable"


def test_delayed_mode_answers_at_once_and_the_url_is_202_until_ready(
        fake_upstream, sovits: FakeGptSovits) -> None:
    from local_runner.app import build_app

    sovits.delay_s = 1.0
    with serve(build_app()) as api, httpx.Client(base_url=api, timeout=10) as http:
        reply = http.post("/api/chat", json={"tts_mode": "delayed", "messages": [
            {"role": "user", "content": "안녕"}]}).json()["data"]
        first = http.get(reply["audio_url"])
        assert first.status_code == 202, "pending while GPT-SoVITS is still speaking"
        assert first.json()["data"]["status"] == "pending" and first.headers["Retry-After"]
        deadline = time.monotonic() + 10
        while (audio := http.get(reply["audio_url"])).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert audio.status_code == 200 and _wav_seconds(audio.content) > 0


def test_delayed_speech_that_fails_leaves_a_404(fake_upstream, sovits: FakeGptSovits,
                                                client: TestClient) -> None:
    sovits.ref_audio_paths = set()
    reply = _say(client, tts_mode="delayed")
    assert reply["audio_url"].startswith("/api/audio/")
    assert client.get(reply["audio_url"]).status_code == 404


def test_streamed_chat_speaks_sentence_by_sentence(fake_upstream, client: TestClient) -> None:
    fake_upstream.reply = "안녕! 오늘 날씨 정말 좋다. 산책 갈래? 나는 공원이 좋아."
    response = client.post("/api/chat", json={"stream": True, "messages": [
        {"role": "user", "content": "안녕"}]})
    events = sse_events(response.text)
    names = [name for name, _ in events]
    audio = [data for name, data in events if name == "audio"]
    assert [a["index"] for a in audio] == list(range(len(audio))) and len(audio) >= 3
    assert names[-1] == "done" and names.index("audio") < len(names) - 1
    assert "".join(a["text"] for a in audio).replace(" ", "") == \
        fake_upstream.reply.replace(" ", "")
    for item in audio:
        wav = client.get(item["audio_url"])
        assert wav.status_code == 200 and abs(_wav_seconds(wav.content) - item["duration"]) < 0.01


def test_streamed_chat_with_tts_down_reports_per_sentence_errors(
        fake_upstream, sovits: FakeGptSovits, settings_env, client: TestClient) -> None:
    settings_env(TTS_BASE_URL=closed_port_url())
    fake_upstream.reply = "안녕! 반가워."
    events = sse_events(client.post("/api/chat", json={"stream": True, "messages": [
        {"role": "user", "content": "안녕"}]}).text)
    audio = [data for name, data in events if name == "audio"]
    assert audio and all(a["error"]["code"] == "upstream_unavailable" for a in audio)
    assert events[-1][0] == "done"


def test_the_deployed_stack_hands_delayed_speech_to_the_tts_function(
        fake_upstream, aws: None, settings_env, client: TestClient) -> None:
    import boto3

    from functions.tts.app import handler
    from roleplay.chat.background_jobs import _lambda_client

    settings_env(SPEECH_FUNCTION="tts")
    _lambda_client.cache_clear()
    payloads: list[bytes] = []
    _lambda_client().meta.events.register(
        "provide-client-params.lambda.Invoke", lambda params, **_: payloads.append(params["Payload"]))
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="tts", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    from tests.chat.test_context import _zipped

    boto3.client("lambda").create_function(
        FunctionName="tts", Runtime="python3.12", Role=role, Handler="app.handler",
        Code={"ZipFile": _zipped("app.py", "def handler(event, context):\n    return event\n")})
    try:
        reply = _say(client, tts_mode="delayed")
    finally:
        _lambda_client.cache_clear()
    assert client.get(reply["audio_url"]).status_code == 202, "nothing spoke in-process"
    job = json.loads(payloads[0])
    assert job["kind"] == "speech" and urlparse(reply["audio_url"]).path.endswith(job["file_id"])
    assert handler(job, None) == {"kind": "speech", "outcome": "ready"}
    assert client.get(reply["audio_url"]).status_code == 200

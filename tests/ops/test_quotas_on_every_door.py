"""Quotas on every door that generates or speaks (issue 29, finding 5): regenerate,
continue, `/v1/chat/completions` (character turns, Continue, pass-through, impersonate,
quiet prompts), `/v1/audio/speech` (and its per-user speech bound), streamed `/api/tts`
and a chat turn's speech. Each is refused with 429 `quota_exceeded` (in OpenAI's shape
under `/v1`), counts one request and its tokens or seconds once, and admins pass.
Real Redis, the scripted LLM over real HTTP, eSpeak NG (or the GPT-SoVITS stand-in)
speaking for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from roleplay.core.errors import ApiError
from roleplay.core.identity import User
from roleplay.core.job_models import SpeechJob
from roleplay.core.redis_keys import redis_keys
from roleplay.ops import quotas
from roleplay.speech import tts_service
from roleplay.speech.audio import parse_wav_header
from roleplay.speech.voice_catalog import voice_by_id
from tests.support.fake_llm import FakeLLM
from tests.support.gpt_sovits_server import FakeGptSovits
from tests.support.sign_in import bearer

ALICE = bearer("alice", exp=int(time.time()) + 86400)  # module-wide: outlives a long run
HI = [{"role": "user", "content": "Hi"}]
SPEECH = {"model": "tts-1", "input": "Hello there, how are you today?", "voice": "default"}
SOVITS_VOICES: dict[str, object] = {"voices": [
    {"id": "default", "name": "기본", "language": "ko", "ref_audio_path": "/srv/voices/default.wav",
     "prompt_text": "안녕하세요.", "prompt_lang": "ko"}]}


@dataclass(frozen=True)
class Door:
    method: str
    path: str
    body: dict[str, Any]
    speaks: bool = False

    @property
    def v1(self) -> bool:
        return self.path.startswith("/v1/")


@dataclass(frozen=True)
class Stage:
    """A signed-in user with a conversation on `/api` and one on `/v1`, before any quota."""

    client: TestClient
    llm: FakeLLM
    character_id: str
    session_id: str
    settings_env: Callable[..., None]

    def door(self, name: str) -> Door:
        character = f"character/{self.character_id}"
        v1_history = [*HI, {"role": "assistant", "content": self.llm.reply}]
        session = f"/api/chat/sessions/{self.session_id}"
        return {
            "chat": Door("POST", "/api/chat", {"messages": HI, "tts_enabled": False}),
            "regenerate": Door("POST", f"{session}/regenerate", {"tts_enabled": False}),
            "regenerate streamed": Door("POST", f"{session}/regenerate",
                                        {"tts_enabled": False, "stream": True}),
            "continue": Door("POST", f"{session}/continue", {"tts_enabled": False}),
            "tts": Door("POST", "/api/tts", {"text": "Hello there."}, speaks=True),
            "v1 character turn": Door("POST", "/v1/chat/completions",
                                      {"model": character, "messages": [
                                          *v1_history, {"role": "user", "content": "And you?"}]}),
            "v1 continue": Door("POST", "/v1/chat/completions",
                                {"model": character, "messages": v1_history}),
            "v1 pass-through": Door("POST", "/v1/chat/completions", {"model": "m", "messages": HI}),
            "v1 pass-through streamed": Door("POST", "/v1/chat/completions",
                                             {"model": "m", "messages": HI, "stream": True}),
            "v1 impersonate": Door("POST", "/v1/chat/completions", {"model": character, "messages": [
                *v1_history, {"role": "system", "content": "[Write your next reply from the point "
                                                          "of view of Ann, in one line.]"}]}),
            "v1 quiet prompt": Door("POST", "/v1/chat/completions", {"model": character, "messages": [
                *v1_history, {"role": "system", "content": "Summarize the chat so far."}]}),
            "v1 audio speech": Door("POST", "/v1/audio/speech", SPEECH, speaks=True),
        }[name]

    def call(self, door: Door, headers: dict[str, str] = ALICE) -> Any:
        return self.client.request(door.method, door.path, json=door.body, headers=headers)


DOORS = ["chat", "regenerate", "regenerate streamed", "continue", "tts", "v1 character turn",
         "v1 continue", "v1 pass-through", "v1 pass-through streamed", "v1 impersonate",
         "v1 quiet prompt", "v1 audio speech"]


@pytest.fixture
def stage(fake_upstream: FakeLLM, auth_on: Callable[..., None], client: TestClient) -> Stage:
    fake_upstream.reply = "Hello! Nice to see you."
    character = client.post("/api/characters", json={"name": "Mia", "persona": "A barista."},
                            headers=ALICE)
    assert character.status_code in (200, 201), character.text
    character_id = character.json()["data"]["id"]
    turn = client.post("/api/chat", json={"messages": HI, "tts_enabled": False}, headers=ALICE)
    assert turn.status_code == 200, turn.text
    v1 = client.post("/v1/chat/completions", json={"model": f"character/{character_id}",
                                                   "messages": HI}, headers=ALICE)
    assert v1.status_code == 200, v1.text
    return Stage(client, fake_upstream, character_id, turn.json()["data"]["session_id"], auth_on)


def _refusal(response: Any, door: Door) -> tuple[str, str]:
    """(error code, quota named) of a 429, checked to be in the door's own error shape."""
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    if door.v1:
        assert error["type"] == "rate_limit_error" and "success" not in response.json()
        return error["code"], error["message"]
    return error["code"], error["details"]["quota"]


def _rpm_taken(sync_redis: Any, user_id: str) -> int:
    minute = int(time.time() // 60)
    keys = [redis_keys().quotas(user_id, m, 0)[0] for m in (minute - 1, minute, minute + 1)]
    return sum(int(sync_redis.get(key) or 0) for key in keys)


def _speech_today(sync_redis: Any, user_id: str) -> float:
    return float(sync_redis.get(quotas._keys(user_id, time.time())[2]) or 0)


@pytest.mark.parametrize("name", DOORS)
def test_every_door_refuses_a_user_past_the_requests_per_minute(stage: Stage, name: str) -> None:
    stage.settings_env(USER_RPM="1")
    assert stage.call(stage.door("chat")).status_code == 200  # the one request of the minute
    door = stage.door(name)
    code, quota = _refusal(stage.call(door), door)
    assert code == "quota_exceeded" and "USER_RPM" in quota


@pytest.mark.parametrize("name", DOORS)
def test_every_door_counts_one_request_once(stage: Stage, sync_redis: Any, name: str) -> None:
    stage.settings_env(USER_RPM="1000")
    door = stage.door(name)
    before = _rpm_taken(sync_redis, "alice")
    assert stage.call(door).status_code == 200
    assert _rpm_taken(sync_redis, "alice") == before + 1


@pytest.mark.parametrize("name", ["v1 character turn", "v1 continue", "v1 pass-through",
                                  "v1 pass-through streamed", "v1 impersonate", "v1 quiet prompt",
                                  "regenerate streamed"])
def test_tokens_of_every_generating_door_count_against_the_day(stage: Stage, name: str) -> None:
    stage.settings_env(USER_TOKENS_PER_DAY="1")
    door = stage.door(name)
    assert stage.call(door).status_code == 200, "under the quota until this reply's tokens count"
    code, quota = _refusal(stage.call(stage.door("v1 pass-through")), stage.door("v1 pass-through"))
    assert code == "quota_exceeded" and "USER_TOKENS_PER_DAY" in quota


def test_v1_audio_speech_counts_its_seconds_once_and_is_refused_past_them(
        stage: Stage, sync_redis: Any) -> None:
    stage.settings_env(USER_TTS_SECONDS_PER_DAY="0.5")
    door = stage.door("v1 audio speech")
    spoken = stage.call(door)
    assert spoken.status_code == 200 and spoken.headers["content-type"] == "audio/wav"
    assert _speech_today(sync_redis, "alice") == pytest.approx(_wav_seconds(spoken.content), abs=0.002)
    code, quota = _refusal(stage.call(door), door)
    assert code == "quota_exceeded" and "USER_TTS_SECONDS_PER_DAY" in quota
    assert _refusal(stage.call(stage.door("tts")), stage.door("tts"))[1] == "USER_TTS_SECONDS_PER_DAY"


def test_api_tts_counts_its_seconds_once(stage: Stage, sync_redis: Any) -> None:
    stage.settings_env(USER_TTS_SECONDS_PER_DAY="1000")
    data = stage.call(stage.door("tts")).json()["data"]
    assert _speech_today(sync_redis, "alice") == pytest.approx(data["duration"], abs=0.002)


def test_v1_audio_speech_waits_for_a_place_like_api_tts(stage: Stage, sync_redis: Any) -> None:
    stage.settings_env(TTS_MAX_CONCURRENT_PER_USER="1", TTS_BUSY_WAIT_S="0")
    sync_redis.zadd(redis_keys().tts_busy("alice"), {"another-synthesis": int(time.time() * 1000) + 60_000})
    for name in ("v1 audio speech", "tts"):
        door = stage.door(name)
        refused = stage.call(door)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "tts_busy", name
    sync_redis.delete(redis_keys().tts_busy("alice"))
    assert stage.call(stage.door("v1 audio speech")).status_code == 200


def test_a_turn_that_speaks_is_refused_once_the_days_speech_is_spent(stage: Stage) -> None:
    stage.settings_env(USER_TTS_SECONDS_PER_DAY="0.5")
    spoken = stage.client.post("/api/chat", json={"messages": HI}, headers=ALICE)
    assert spoken.status_code == 200 and spoken.json()["data"]["audio_url"]
    for door in (Door("POST", "/api/chat", {"messages": HI}),
                 Door("POST", "/api/chat", {"messages": HI, "stream": True}),
                 Door("POST", f"/api/chat/sessions/{stage.session_id}/regenerate", {}),
                 Door("POST", "/api/chat", {"messages": HI, "tts_mode": "delayed"})):
        code, quota = _refusal(stage.call(door), door)
        assert (code, quota) == ("quota_exceeded", "USER_TTS_SECONDS_PER_DAY"), door
    assert stage.call(stage.door("chat")).status_code == 200, "a turn without speech still goes"
    assert stage.client.post("/api/chat", json={"messages": HI, "tts_mode": "on_click"},
                             headers=ALICE).status_code == 200, "on_click speaks nothing now"


@pytest.mark.parametrize("name", DOORS)
def test_an_admin_passes_every_door_past_every_quota(stage: Stage, sync_redis: Any, name: str) -> None:
    stage.settings_env(USER_RPM="1", USER_TOKENS_PER_DAY="1", USER_TTS_SECONDS_PER_DAY="0.01")
    admin = bearer("alice", roles=["admin"])
    door = stage.door(name)
    assert [stage.call(door, admin).status_code for _ in range(3)] == [200] * 3
    assert _rpm_taken(sync_redis, "alice") == 0 and _speech_today(sync_redis, "alice") == 0


def _wav_seconds(data: bytes) -> float:
    import io
    import wave

    with wave.open(io.BytesIO(data), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


# --- streamed /api/tts, on the GPT-SoVITS stand-in (eSpeak NG does not stream) --------------
@pytest.fixture
def sovits_voices() -> dict[str, object]:
    return SOVITS_VOICES


@pytest.fixture
def streaming_tts(sovits: FakeGptSovits, auth_on: Callable[..., None],
                  client: TestClient) -> Iterator[Callable[[], Any]]:
    def speak() -> Any:
        return client.post("/api/tts", headers=ALICE, json={
            "text": "오늘은 비가 와요.", "streaming_mode": 2, "return_binary": True})

    yield speak


def test_streamed_api_tts_counts_its_seconds(streaming_tts: Callable[[], Any],
                                             auth_on: Callable[..., None], sync_redis: Any) -> None:
    auth_on(USER_TTS_SECONDS_PER_DAY="0.1")
    streamed = streaming_tts()
    assert streamed.status_code == 200 and streamed.content[40:44] == bytes(4), "streamed"
    header = parse_wav_header(streamed.content)
    assert header is not None
    fmt, start = header
    pcm_seconds = (len(streamed.content) - start) / (fmt.sample_rate * fmt.block_align)
    assert _speech_today(sync_redis, "alice") == pytest.approx(pcm_seconds, abs=0.002)
    refused = streaming_tts()
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["quota"] == "USER_TTS_SECONDS_PER_DAY"


def test_streamed_api_tts_holds_a_place(streaming_tts: Callable[[], Any],
                                        auth_on: Callable[..., None], sync_redis: Any) -> None:
    auth_on(TTS_MAX_CONCURRENT_PER_USER="1", TTS_BUSY_WAIT_S="0")
    sync_redis.zadd(redis_keys().tts_busy("alice"), {"another-synthesis": int(time.time() * 1000) + 60_000})
    refused = streaming_tts()
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "tts_busy"


# --- chat speech in the speech layer: what the chat call sites hand it -------------------
def test_delayed_speech_counts_against_whom_it_was_reserved_for(
        settings_env: Callable[..., None], sync_redis: Any) -> None:
    settings_env(USER_TTS_SECONDS_PER_DAY="1000")
    alice = User("alice", authenticated=True)

    async def spoken(speaker: User | None) -> str:
        file_id, _ = await tts_service.reserve(speaker)
        job = SpeechJob(file_id=file_id, text="Hello there.", voice_id="default", language="en")
        return await tts_service.speak_into(job)

    assert asyncio.run(spoken(alice)) == "ready"
    counted = _speech_today(sync_redis, "alice")
    assert counted > 0.3
    assert asyncio.run(spoken(None)) == "ready"
    assert asyncio.run(spoken(User("alice", authenticated=True, is_admin=True))) == "ready"
    assert _speech_today(sync_redis, "alice") == counted, "nobody named, or an admin: nothing counted"


def test_chat_speech_holds_its_speakers_place(settings_env: Callable[..., None],
                                              sync_redis: Any) -> None:
    settings_env(TTS_MAX_CONCURRENT_PER_USER="1", TTS_BUSY_WAIT_S="0")
    alice = User("alice", authenticated=True)
    sync_redis.zadd(redis_keys().tts_busy("alice"), {"another-synthesis": int(time.time() * 1000) + 60_000})
    voice = voice_by_id("default")
    with pytest.raises(ApiError) as busy:
        asyncio.run(tts_service.speak("Hello there.", voice, language="en", speaker=alice))
    assert busy.value.error_code == "tts_busy"
    spoken = asyncio.run(tts_service.speak("Hello there.", voice, language="en"))
    assert spoken.duration > 0, "speech nobody is named for is not held back"

"""One GPU, several models (issue 21): the mode coordinator against Server A stand-ins
that enforce a 24 GB card (tests/support/gpu_standins.py), on real Redis, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest

from roleplay.gpu.coordinator import gpu_lease, gpu_status
from tests.support.gpu_standins import CARD_GB, GpuServerA, switching_config, until
from tests.support.server_process import server_b_process
from tests.support.upstream_server import closed_port_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app_client() -> httpx.AsyncClient:
    from local_runner.app import build_app

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()),
                             base_url="http://server-b", timeout=60)


async def _chat(http: httpx.AsyncClient, **extra: object) -> httpx.Response:
    return await http.post("/api/chat", json={
        "messages": [{"role": "user", "content": "Hello there!"}], "tts_enabled": False, **extra})


async def _speak(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/api/tts", json={"text": "안녕하세요.", "voice_id": "default"})


def _assert_card_held(server_a: GpuServerA) -> None:
    assert server_a.vram.refused == [], "a model failed to load: the card was over budget"
    assert server_a.vram.peak_gb <= CARD_GB
    assert server_a.vllm.cut == 0 and server_a.sovits.cut == 0, "a switch cut a request in flight"
    assert server_a.vllm.refused_asleep == 0 and server_a.sovits.refused_stopped == 0


async def test_coresident_default_never_touches_redis(sync_redis, key_prefix: str) -> None:
    async with gpu_lease("llm"), gpu_lease("tts"):
        pass
    assert sync_redis.keys(f"{key_prefix}gpu:*") == []
    assert (await gpu_status()).strategy == "coresident"


async def test_concurrent_chat_and_speech_never_exceed_the_card(gpu_server_a: GpuServerA) -> None:
    async with _app_client() as http:
        calls = [_chat(http) if n % 2 else _speak(http) for n in range(16)]
        answers = await asyncio.gather(*calls)
    assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers if a.status_code != 200]
    _assert_card_held(gpu_server_a)
    assert gpu_server_a.vllm.completed == 8 and gpu_server_a.sovits.completed == 8
    assert (await gpu_status()).switches >= 1


async def test_a_switch_waits_for_the_request_in_flight(gpu_server_a: GpuServerA) -> None:
    gpu_server_a.vllm.reply_delay_s = 1.0
    async with _app_client() as http:
        chat = asyncio.create_task(_chat(http))
        await until(lambda: gpu_server_a.vllm.in_flight > 0)
        speech = await _speak(http)
        assert chat.done(), "speech was spoken before the chat in flight had its reply"
        assert (await chat).status_code == 200
    assert speech.status_code == 200
    assert [e for e in gpu_server_a.vllm.events if e.startswith("sleep")] == ["sleep:wait"]
    _assert_card_held(gpu_server_a)


async def test_resident_mode_requests_do_not_wait_behind_a_switch_not_started(
        gpu_server_a: GpuServerA, settings_env: Callable[..., None]) -> None:
    settings_env(GPU_MIN_RESIDENCY_S="2")
    async with _app_client() as http:
        assert (await _chat(http)).status_code == 200  # chat is resident from now
        speech = asyncio.create_task(_speak(http))  # waits out chat's residency
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert (await _chat(http)).status_code == 200
        assert time.monotonic() - started < 1.0
        assert not speech.done()
        assert (await speech).status_code == 200
    _assert_card_held(gpu_server_a)


async def test_residency_keeps_alternating_load_from_thrashing(
        gpu_server_a: GpuServerA, settings_env: Callable[..., None]) -> None:
    settings_env(GPU_MIN_RESIDENCY_S="1")
    started = time.monotonic()

    async def user(kind: str, http: httpx.AsyncClient) -> list[int]:
        codes = []
        while time.monotonic() - started < 3:
            answer = await (_chat(http) if kind == "chat" else _speak(http))
            codes.append(answer.status_code)
        return codes

    async with _app_client() as http:
        results = await asyncio.gather(*(user(kind, http) for kind in ["chat", "tts"] * 3))
    elapsed = time.monotonic() - started
    assert all(code == 200 for codes in results for code in codes)
    status = await gpu_status()
    # Without residency every alternation would switch; with it, at most one per second.
    assert status.switches <= elapsed / 1.0 + 1, status
    assert status.waits > 0
    _assert_card_held(gpu_server_a)


async def test_realtime_speech_reply_is_one_unit_with_one_switch(gpu_server_a: GpuServerA) -> None:
    async with _app_client() as http:
        answer = await _chat(http, tts_enabled=True, tts_mode="realtime")
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data["audio_url"] and data["tts_error"] is None
    status = await gpu_status()
    assert (status.mode, status.switches) == ("tts", 2)  # unknown -> chat, then chat -> tts
    _assert_card_held(gpu_server_a)


async def test_streamed_reply_with_speech_speaks_after_its_text_with_one_switch(
        gpu_server_a: GpuServerA) -> None:
    from tests.support.sse import sse_events

    async with _app_client() as http:
        answer = await http.post("/api/chat", json={
            "messages": [{"role": "user", "content": "Hello there!"}], "stream": True})
    events = sse_events(answer.text)
    audio = [data for name, data in events if name == "audio"]
    assert [name for name, _ in events][-1] == "done"
    assert audio and all(a.get("audio_url") for a in audio), audio
    status = await gpu_status()
    assert (status.mode, status.switches) == ("tts", 2)  # unknown -> chat, then chat -> tts
    _assert_card_held(gpu_server_a)


async def test_a_dead_hook_is_gpu_busy_not_a_hang(
        gpu_server_a: GpuServerA, settings_env: Callable[..., None]) -> None:
    config = switching_config(gpu_server_a.vllm_url, gpu_server_a.sovits_url)
    config["services"]["tts"]["load"][0]["url"] = closed_port_url()  # type: ignore[index]
    settings_env(GPU_MODES=json.dumps(config), GPU_SWITCH_WAIT_S="3")
    started = time.monotonic()
    async with _app_client() as http:
        answer = await _speak(http)
    assert time.monotonic() - started < 10
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "gpu_busy"
    assert int(answer.headers["Retry-After"]) >= 1


def test_two_runner_processes_agree_on_the_mode(gpu_server_a: GpuServerA, redis_url: str,
                                                key_prefix: str) -> None:
    import os

    env = {name: os.environ[name] for name in (
        "LLM_BASE_URL", "DEFAULT_MODEL", "TTS_BASE_URL", "VOICES_FILE", "MAX_CONCURRENT_USERS",
        "GPU_MODES", "GPU_MIN_RESIDENCY_S", "GPU_SWITCH_WAIT_S", "GPU_ACTION_TIMEOUT_S")}
    env |= {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": key_prefix}
    with server_b_process(env) as first, server_b_process(env) as second:
        def mode(url: str) -> str:
            return str(httpx.get(f"{url}/api/health", timeout=10).json()["data"]["gpu"]["mode"])

        speak = {"text": "안녕하세요.", "voice_id": "default"}
        chat = {"messages": [{"role": "user", "content": "Hi!"}], "tts_enabled": False}
        for round_ in range(3):
            assert httpx.post(f"{first.base_url}/api/tts", json=speak, timeout=30).status_code == 200
            assert mode(first.base_url) == mode(second.base_url) == "tts"
            assert httpx.post(f"{second.base_url}/api/chat", json=chat, timeout=30).status_code == 200
            assert mode(first.base_url) == mode(second.base_url) == "chat", round_
    _assert_card_held(gpu_server_a)


@pytest.mark.parametrize("value", ["{not json", '{"strategy": "switching"}',
                                   '{"modes": {"chat": ["nobody"]}}'])
def test_a_bad_gpu_modes_names_the_variable(value: str) -> None:
    from roleplay.core.settings import ConfigurationError
    from roleplay.gpu.config import parse_gpu_modes

    with pytest.raises(ConfigurationError, match="GPU_MODES"):
        parse_gpu_modes(value)


def test_the_example_gpu_modes_file_is_valid() -> None:
    from roleplay.gpu.config import parse_gpu_modes

    config = parse_gpu_modes("infra/gpu-modes.example.yaml")
    assert config.strategy == "switching"
    assert config.modes_with("llm") == ["chat"] and config.modes_with("tts")[0] == "chat"

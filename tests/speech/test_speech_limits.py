"""Bounded speech and bodies, over real HTTP: a user's concurrent syntheses (across two
instances sharing Redis), text with nothing to say, and a chunked body past the limit.

GPT-SoVITS is the api_v2 stand-in (tests/support/gpt_sovits_server.py) taking a while per
synthesis; eSpeak NG is the real embedded engine.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.speech.test_tts_api import VOICES
from tests.support.gpt_sovits_server import FakeGptSovits
from tests.support.upstream_server import closed_port_url, serve


@pytest.fixture
def voices_file(tmp_path: Path) -> Path:
    path = tmp_path / "voices.json"
    path.write_text(json.dumps(VOICES, ensure_ascii=False))
    return path


@pytest.fixture
def slow_sovits(settings_env: Callable[..., None], voices_file: Path) -> Iterator[FakeGptSovits]:
    fake = FakeGptSovits(delay_s=1.0)
    with serve(fake.build()) as url:
        settings_env(TTS_BASE_URL=url, VOICES_FILE=str(voices_file),
                     TTS_MAX_CONCURRENT_PER_USER="2", TTS_BUSY_WAIT_S="0.3")
        yield fake


@pytest.fixture
def instances(slow_sovits: FakeGptSovits) -> Iterator[list[str]]:
    """Two Server B instances sharing one Redis, as two Lambdas or two `make run`s."""
    from local_runner.app import build_app

    with ExitStack() as stack:
        yield [stack.enter_context(serve(build_app())) for _ in range(2)]


def _speak(url: str, cookies: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/api/tts", json={"text": "안녕하세요."}, cookies=cookies, timeout=60)


def test_one_user_runs_at_most_two_syntheses_across_instances(
        instances: list[str], slow_sovits: FakeGptSovits) -> None:
    """On main all twelve queued on the engine, and every other user's speech behind them."""
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda n: _speak(instances[n % 2]), range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200] + [429] * 10, statuses
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["error"]["code"] == "tts_busy"
    assert busy.json()["error"]["details"] == {"max_concurrent_per_user": 2}
    assert len(slow_sovits.syntheses) == 2


def test_another_user_is_not_queued_behind_a_busy_one(instances: list[str]) -> None:
    other = httpx.get(f"{instances[1]}/api/chat/sessions/none").cookies  # a browser's own cookie
    with ThreadPoolExecutor(9) as pool:
        flood = [pool.submit(_speak, instances[0]) for _ in range(8)]
        mine = pool.submit(_speak, instances[1], dict(other))
        assert mine.result().status_code == 200
        assert sum(f.result().status_code == 200 for f in flood) == 2


def test_a_place_is_given_back_when_a_synthesis_fails(settings_env: Callable[..., None],
                                                     voices_file: Path, client: TestClient) -> None:
    settings_env(TTS_BASE_URL=closed_port_url(), VOICES_FILE=str(voices_file),
                 TTS_MAX_CONCURRENT_PER_USER="1",
                 TTS_BUSY_WAIT_S="0")
    for _ in range(3):
        failed = client.post("/api/tts", json={"text": "안녕"})
        assert failed.status_code == 502, "never 429: the failed call's place was returned"


@pytest.mark.parametrize("text", ["\x00", "\x00\x00\x00\x00", "\x00 \x01\x1b\x7f", "\u200b\u200b",
                                  "\t\x00\n", "...!?", "\u00b4\u00a5", "♥♥", "😊"])
def test_text_with_nothing_to_say_is_400_empty_text(client: TestClient, text: str) -> None:
    """On main NUL-only text synthesized 0.06 s of audio; symbols alone (`´¥`, found by the
    OpenAPI fuzzer) reached GPT-SoVITS, which answers them with silence: a 502."""
    answer = client.post("/api/tts", json={"text": text})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "empty_text"


def test_control_characters_inside_text_are_not_spoken_and_do_not_cut_it(client: TestClient) -> None:
    whole = client.post("/api/tts", json={"text": "안녕하세요 반가워요"}).json()["data"]["duration"]
    with_nul = client.post("/api/tts", json={"text": "안녕하세요\x00 반가워요"}).json()["data"]["duration"]
    assert with_nul > whole * 0.8, "a NUL no longer ends the text for the C engine"


def test_a_chunked_body_past_the_limit_is_413(settings_env: Callable[..., None]) -> None:
    """No Content-Length, so only counting what arrives can tell; on main it was a 400."""
    from local_runner.app import build_app

    settings_env(MAX_BODY_BYTES="2048")

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "a", "persona": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    with serve(build_app()) as url:
        answer = httpx.post(f"{url}/api/characters", content=chunks(),
                            headers={"content-type": "application/json"}, timeout=30)
        assert answer.request.headers.get("transfer-encoding") == "chunked"
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "payload_too_large"
        small = httpx.post(f"{url}/api/characters", content=iter([b'{"name": "a"}']),
                           headers={"content-type": "application/json"}, timeout=30)
        assert small.status_code == 201


def test_espeak_queues_on_its_own_thread_not_the_shared_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why one user's queued speech stalled everyone's audio downloads: each eSpeak call
    waited for the engine's lock inside `asyncio.to_thread`, so forty of them filled the
    default pool that the audio store's file reads also need."""
    from roleplay.speech.engines import espeak as espeak_engine
    from roleplay.speech.voice_catalog import voice_by_id

    gate = threading.Event()
    monkeypatch.setattr(espeak_engine, "_speak",
                        lambda *_: (gate.wait(30), (b"\0\0" * 160, 16000))[1])

    async def go() -> None:
        engine = espeak_engine.EspeakEngine()
        queued = [asyncio.create_task(engine.synthesize("안녕", voice_by_id("default")))
                  for _ in range(40)]
        await asyncio.sleep(0.1)
        try:
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "a file read"), 10) == "a file read"
        finally:
            gate.set()
            await asyncio.gather(*queued)

    asyncio.run(go())

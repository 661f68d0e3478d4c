"""The GPT-SoVITS client against a stand-in for api_v2.py, on real Redis.

The lock tests run two voices with different weights at once, in one event loop and
in separate processes, and check every synthesis ran with its own voice's weights.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from io import BytesIO

import httpx
import pytest

from roleplay.core.errors import (
    BadRequest,
    NotConfigured,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from roleplay.speech.audio import PcmChunk
from roleplay.speech.engine import SynthesizedAudio, speech_engine, wav_duration
from roleplay.speech.engines import gpt_sovits as gpt_sovits_client
from roleplay.speech.engines.failover import FailoverSpeechEngine
from roleplay.speech.engines.gpt_sovits import (
    GptSovitsEngine,
    complete_streamed_wav,
    engine_lock_key,
    loaded_weights_key,
)
from roleplay.speech.voice_catalog import Voice
from tests.support.gpt_sovits_server import SECONDS_PER_CHAR, FakeGptSovits, segments
from tests.support.upstream_server import closed_port_url, serve, silent_socket

ALICE = Voice(id="alice", name="Alice", language="ko", ref_audio_path="refs/alice.wav",
              prompt_text="안녕하세요, 저는 앨리스예요.", prompt_lang="ko",
              gpt_weights="GPT_weights_v2/alice-e15.ckpt", sovits_weights="SoVITS_weights_v2/alice_e8.pth")
BORIS = Voice(id="boris", name="Boris", language="en", ref_audio_path="refs/boris.wav",
              prompt_text="Hello, I am Boris.",
              gpt_weights="GPT_weights_v2/boris-e15.ckpt", sovits_weights="SoVITS_weights_v2/boris_e8.pth")
PLAIN = Voice(id="plain", name="Plain", language="ko", ref_audio_path="refs/plain.wav")
VOICES = {voice.ref_audio_path: voice for voice in (ALICE, BORIS, PLAIN)}


@pytest.fixture
def upstream(settings_env: Callable[..., None]) -> Iterator[FakeGptSovits]:
    fake = FakeGptSovits()
    with serve(fake.build()) as url:
        settings_env(TTS_BASE_URL=url)
        fake.url = url  # type: ignore[attr-defined]
        yield fake


def _engine(fake: FakeGptSovits) -> GptSovitsEngine:
    return GptSovitsEngine(fake.url)  # type: ignore[attr-defined]


def _synthesize(engine: GptSovitsEngine, text: str, voice: Voice, **options: object) -> SynthesizedAudio:
    return asyncio.run(engine.synthesize(text, voice, **options))  # type: ignore[arg-type]


def _expected_pair(voice: Voice) -> tuple[str | None, str | None]:
    return voice.gpt_weights, voice.sovits_weights


def _assert_own_weights(fake: FakeGptSovits) -> None:
    for record in fake.syntheses:
        voice = VOICES[record.ref_audio_path]
        assert record.loaded_at_start == _expected_pair(voice), record
        assert record.loaded_at_end == _expected_pair(voice), record


def test_speech_engine_is_gpt_sovits_when_tts_base_url_is_set(settings_env) -> None:
    settings_env(TTS_BASE_URL="http://gpu-a:9880/")
    engine = speech_engine()
    assert isinstance(engine, FailoverSpeechEngine)
    assert [(type(e), url) for url, e in engine.engines.items()] == [(GptSovitsEngine, "http://gpu-a:9880")]
    settings_env(TTS_SERVICE="espeak")
    assert speech_engine().service == "espeak"


def test_speech_engine_is_espeak_without_tts_base_url(settings_env) -> None:
    assert speech_engine().service == "espeak"
    settings_env(TTS_SERVICE="gpt_sovits")
    with pytest.raises(NotConfigured, match="TTS_BASE_URL"):
        speech_engine()


def test_request_shape_and_wav_answer(upstream: FakeGptSovits) -> None:
    audio = _synthesize(_engine(upstream), "  안녕, 반가워!  ", ALICE, speed=1.25)
    body = upstream.requests[-1]
    assert body == {
        "text": "안녕, 반가워!", "text_lang": "ko", "ref_audio_path": "refs/alice.wav",
        "aux_ref_audio_paths": [], "prompt_text": "안녕하세요, 저는 앨리스예요.", "prompt_lang": "ko",
        "top_k": 15, "top_p": 1.0, "temperature": 1.0, "text_split_method": "cut5", "batch_size": 1,
        "batch_threshold": 0.75, "split_bucket": True, "speed_factor": 1.25, "fragment_interval": 0.3,
        "seed": -1, "media_type": "wav", "streaming_mode": 0, "parallel_infer": True,
        "repetition_penalty": 1.35, "sample_steps": 32, "super_sampling": False,
        "overlap_length": 2, "min_chunk_length": 16,
    }
    assert audio.media_type == "audio/wav"
    assert audio.sample_rate == 32000
    assert audio.duration_s == pytest.approx(len("안녕, 반가워!") * SECONDS_PER_CHAR / 1.25, abs=1e-3)
    assert wav_duration(audio.audio) == audio.duration_s


def test_language_override_and_prompt_lang_fallback(upstream: FakeGptSovits) -> None:
    _synthesize(_engine(upstream), "hello", BORIS, language="EN-us")
    body = upstream.requests[-1]
    assert (body["text_lang"], body["prompt_lang"], body["prompt_text"]) == ("en", "en", "Hello, I am Boris.")
    _synthesize(_engine(upstream), "안녕", PLAIN)
    assert upstream.requests[-1]["prompt_text"] == ""


def test_upstream_400_is_502_with_its_message(upstream: FakeGptSovits) -> None:
    with pytest.raises(UpstreamError) as caught:
        _synthesize(_engine(upstream), "bonjour", PLAIN, language="fr")
    assert caught.value.status_code == 502
    assert caught.value.error_code == "upstream_error"
    assert "answered 400: text_lang: fr is not supported in version v2" in caught.value.message
    assert caught.value.details == {"upstream_status": 400}

    upstream.ref_audio_paths = {"refs/alice.wav"}
    with pytest.raises(UpstreamError, match=r"tts failed: \[Errno 2\] No such file or directory: "
                                            r"'refs/plain.wav'"):
        _synthesize(_engine(upstream), "안녕", PLAIN)


def test_failed_weight_switch_is_502_and_leaves_no_record(upstream: FakeGptSovits, sync_redis) -> None:
    upstream.weights_paths = {ALICE.gpt_weights or ""}
    with pytest.raises(UpstreamError, match=r"change sovits weight failed: .*alice_e8\.pth"):
        _synthesize(_engine(upstream), "안녕", ALICE)
    assert upstream.syntheses == []
    assert sync_redis.get(loaded_weights_key()) is None, "a half switch must not be trusted later"
    assert sync_redis.get(engine_lock_key()) is None, "the lock is released after a failure"


def test_missing_reference_audio_is_refused_before_calling(upstream: FakeGptSovits) -> None:
    voice = Voice(id="default", name="기본 음성")
    with pytest.raises(NotConfigured, match="ref_audio_path"):
        _synthesize(_engine(upstream), "안녕", voice)
    with pytest.raises(BadRequest):
        _synthesize(_engine(upstream), "   ", ALICE)
    assert upstream.requests == []


def test_unreachable_is_502(settings_env) -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        _synthesize(GptSovitsEngine(closed_port_url()), "안녕", PLAIN)
    assert caught.value.status_code == 502


def test_slow_is_504(settings_env, sync_redis) -> None:
    settings_env(TTS_READ_TIMEOUT_S="0.3")
    sync_redis.set(loaded_weights_key(), json.dumps({"gpt": "x", "sovits": "y"}))
    with silent_socket() as url, pytest.raises(UpstreamTimeout) as caught:
        _synthesize(GptSovitsEngine(url), "안녕", PLAIN)
    assert caught.value.status_code == 504
    assert sync_redis.get(loaded_weights_key()) is None, "after a timeout the loaded pair is unknown"


def _streamed_seconds(text: str, interval_s: float = 0.3) -> float:
    """What the stand-in says for `text` streamed: each cut5 piece, then `fragment_interval`."""
    pieces = segments(text)
    return sum(len(p) for p in pieces) * SECONDS_PER_CHAR + interval_s * len(pieces)


def test_streaming_sends_a_wav_header_then_raw_pcm(upstream: FakeGptSovits) -> None:
    upstream.delay_s, upstream.delay_per_char_s = 0.05, 0.02
    text = "스트리밍으로 말해 볼게요."

    async def collect() -> list[bytes]:
        return [chunk async for chunk in _engine(upstream).synthesize_stream(text, ALICE, streaming_mode=2)]

    chunks = asyncio.run(collect())
    assert len(chunks) > 1, "audio arrives in pieces"
    assert upstream.requests[-1]["streaming_mode"] == 2
    streamed = b"".join(chunks)
    with wave.open(BytesIO(streamed[:44])) as header:
        assert (header.getframerate(), header.getnframes()) == (32000, 0)
    whole = complete_streamed_wav(streamed)
    assert wav_duration(whole) == pytest.approx(_streamed_seconds(text), abs=1e-3)
    assert whole[44:] == streamed[44:]


def test_synthesize_in_a_streaming_mode_returns_a_whole_wav(upstream: FakeGptSovits) -> None:
    audio = _synthesize(_engine(upstream), "빠르게", ALICE, streaming_mode=3)
    assert upstream.requests[-1]["streaming_mode"] == 3
    assert audio.duration_s == pytest.approx(_streamed_seconds("빠르게"), abs=1e-3)
    assert wav_duration(audio.audio) == audio.duration_s
    with pytest.raises(BadRequest):
        _synthesize(_engine(upstream), "x", ALICE, streaming_mode=7)


def test_upstream_refuses_an_unknown_streaming_mode(upstream: FakeGptSovits) -> None:
    response = httpx.post(f"{upstream.url}/tts", json={  # type: ignore[attr-defined]
        "text": "x", "text_lang": "ko", "ref_audio_path": "r.wav", "prompt_lang": "ko",
        "streaming_mode": 7})
    assert response.status_code == 400
    assert response.json() == {
        "message": "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)"}


def test_an_unchanged_pair_skips_the_switch(upstream: FakeGptSovits, sync_redis) -> None:
    engine = _engine(upstream)
    _synthesize(engine, "하나", ALICE)
    _synthesize(engine, "둘", ALICE)
    assert upstream.switches == [("gpt", ALICE.gpt_weights), ("sovits", ALICE.sovits_weights)]
    assert json.loads(sync_redis.get(loaded_weights_key())) == {
        "gpt": ALICE.gpt_weights, "sovits": ALICE.sovits_weights}
    _synthesize(engine, "three", BORIS)
    _synthesize(engine, "넷", PLAIN)  # no weights of its own: whatever is loaded
    _synthesize(engine, "다섯", ALICE)
    assert len(upstream.switches) == 6
    assert upstream.syntheses[3].loaded_at_start == _expected_pair(BORIS)
    _assert_own_weights_except_plain(upstream)


def _assert_own_weights_except_plain(fake: FakeGptSovits) -> None:
    fake.syntheses = [s for s in fake.syntheses if s.ref_audio_path != PLAIN.ref_audio_path]
    _assert_own_weights(fake)


def test_restart_forgets_the_loaded_pair(upstream: FakeGptSovits, sync_redis) -> None:
    engine = _engine(upstream)
    _synthesize(engine, "하나", ALICE)
    asyncio.run(engine.control("restart"))
    assert upstream.commands == ["restart"]
    assert sync_redis.get(loaded_weights_key()) is None
    _synthesize(engine, "둘", ALICE)
    assert len(upstream.switches) == 4
    _assert_own_weights(upstream)


def test_concurrent_voices_never_share_weights(upstream: FakeGptSovits) -> None:
    upstream.delay_s, upstream.switch_delay_s = 0.08, 0.03
    engine = _engine(upstream)

    async def both() -> list[SynthesizedAudio]:
        return await asyncio.gather(*(engine.synthesize(f"문장 {i}", voice)
                                      for i in range(4) for voice in (ALICE, BORIS)))

    results = asyncio.run(both())
    assert len(results) == len(upstream.syntheses) == 8
    _assert_own_weights(upstream)


def test_the_check_sees_interleaving_without_the_lock(upstream: FakeGptSovits,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves the test above can fail: with the lock gone, weights get mixed up."""

    @asynccontextmanager
    async def no_lock() -> AsyncIterator[None]:
        yield

    monkeypatch.setattr(gpt_sovits_client, "engine_lock", no_lock)
    upstream.delay_s, upstream.switch_delay_s = 0.08, 0.03
    engine = _engine(upstream)

    async def both() -> None:
        await asyncio.gather(*(engine.synthesize("문장", voice) for voice in (ALICE, BORIS)))

    asyncio.run(both())
    with pytest.raises(AssertionError):
        _assert_own_weights(upstream)


def _speak_in_a_process(voice_ids: list[str]) -> int:
    by_id = {voice.id: voice for voice in (ALICE, BORIS)}
    from roleplay.core.settings import get_settings

    engine = GptSovitsEngine(str(get_settings().tts_base_url))

    async def run() -> int:
        for voice_id in voice_ids:
            await engine.synthesize(f"{voice_id} 말하기", by_id[voice_id])
        return len(voice_ids)

    return asyncio.run(run())


def test_voices_in_separate_processes_never_share_weights(upstream: FakeGptSovits) -> None:
    upstream.delay_s, upstream.switch_delay_s = 0.05, 0.02
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        done = pool.map(_speak_in_a_process, [["alice", "boris"] * 3, ["boris", "alice"] * 3])
    assert done == [6, 6]
    assert len(upstream.syntheses) == 12
    _assert_own_weights(upstream)


def test_a_busy_engine_is_503_after_the_lock_timeout(upstream: FakeGptSovits, settings_env,
                                                    sync_redis) -> None:
    settings_env(TTS_LOCK_TIMEOUT_S="0.3")
    sync_redis.set(engine_lock_key(), "someone-else", px=10_000)
    with pytest.raises(ServiceUnavailable) as caught:
        _synthesize(_engine(upstream), "안녕", ALICE)
    assert caught.value.error_code == "tts_busy"
    assert caught.value.status_code == 503
    assert upstream.requests == []
    assert sync_redis.get(engine_lock_key()) == "someone-else"


def test_a_synthesis_longer_than_the_lease_keeps_the_lock(upstream: FakeGptSovits,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from roleplay.core.redis_client import get_redis

    # A lease of 0.9 s, renewed every 0.3 s: a stall of the loop under 0.6 s (a busy CI
    # machine's) leaves it held; 0.3 s, renewed every 0.1 s, lost it once in a CI run.
    monkeypatch.setattr(gpt_sovits_client, "LOCK_LEASE_S", 0.9)
    upstream.delay_s = 2.0
    engine = _engine(upstream)

    async def probe() -> list[bool]:
        redis, seen = await get_redis(), []
        for _ in range(4):
            await asyncio.sleep(0.4)
            seen.append(bool(await redis.exists(engine_lock_key())))
        return seen

    async def both() -> list[bool]:
        _, seen = await asyncio.gather(engine.synthesize("길게 말하기", ALICE), probe())
        return seen

    assert asyncio.run(both()) == [True] * 4, "renewed while held, past its 0.9 s lease"


LONG = "오늘은 비가 많이 와서 창밖을 오래 바라봤어요. 빗소리가 참 좋더라고요. 당신은 뭐 했어요?"


def _stream(engine: GptSovitsEngine, text: str, mode: int,
            seen: Callable[[PcmChunk], None] | None = None) -> list[PcmChunk]:
    async def collect() -> list[PcmChunk]:
        chunks = []
        async for chunk in engine.stream_pcm(text, ALICE, streaming_mode=mode):
            if seen:
                seen(chunk)
            chunks.append(chunk)
        return chunks

    return asyncio.run(collect())


def test_failed_inference_is_an_error_not_one_second_of_silence(upstream: FakeGptSovits) -> None:
    upstream.fail_after_chunks = 0
    with pytest.raises(UpstreamError, match="one second of 16 kHz silence") as caught:
        _synthesize(_engine(upstream), "안녕하세요", ALICE)
    assert caught.value.status_code == 502
    assert upstream.syntheses, "upstream was asked, and answered 200 with silence"


def test_text_gpt_sovits_would_drop_whole_is_refused_before_asking_it(
        upstream: FakeGptSovits) -> None:
    """`pre_seg_text` drops every piece without a word character, and `TTS.run` then
    answers one second of silence: such text is a 400 `empty_text` here, never sent."""
    for text in ("~~!?", "\u00b4\u00a5"):
        with pytest.raises(BadRequest, match="no text to speak"):
            _synthesize(_engine(upstream), text, ALICE)
        with pytest.raises(BadRequest, match="no text to speak"):
            _stream(_engine(upstream), text, 2)
    assert upstream.syntheses == []


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_a_stream_that_fails_before_any_audio_is_an_error_with_nothing_relayed(
        upstream: FakeGptSovits, mode: int) -> None:
    upstream.fail_after_chunks = 0
    relayed: list[PcmChunk] = []
    with pytest.raises(UpstreamError, match=r"16 kHz silence|cut its audio stream"):
        _stream(_engine(upstream), LONG, mode, relayed.append)
    assert relayed == [], "the 16 kHz zeros are held back, never relayed as speech"


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_a_stream_cut_mid_way_is_an_error_after_the_chunks_so_far(upstream: FakeGptSovits,
                                                                  mode: int) -> None:
    upstream.fail_after_chunks = 1
    relayed: list[PcmChunk] = []
    with pytest.raises(UpstreamError, match="cut its audio stream short"):
        _stream(_engine(upstream), LONG, mode, relayed.append)
    assert relayed and relayed[0].format.sample_rate == 32000


@pytest.mark.parametrize(("mode", "min_chunks"), [(1, 3), (2, 4), (3, 6)])
def test_streaming_modes_relay_each_chunk_before_synthesis_ends(upstream: FakeGptSovits, mode: int,
                                                                min_chunks: int) -> None:
    upstream.delay_per_char_s, upstream.chunk_decode_s = 0.004, 0.02
    unfinished: list[bool] = []
    chunks = _stream(_engine(upstream), LONG, mode,
                     lambda _: unfinished.append(upstream.syntheses[-1].loaded_at_end is None))
    assert len(chunks) >= min_chunks, [len(c.pcm) for c in chunks]
    assert unfinished[0], "the first chunk is relayed while upstream is still synthesizing"
    assert sum(len(c.pcm) for c in chunks) == pytest.approx(_streamed_seconds(LONG) * 64000, abs=64)

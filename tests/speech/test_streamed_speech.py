"""Speech that streams, and speech that failed, through the HTTP API, over real HTTP.

GPT-SoVITS is the api_v2 stand-in (tests/support/gpt_sovits_server.py), which times its chunks
and fails the way upstream's `TTS.run` does. "Before the synthesis ends" is never a
timing here: the stand-in records the end of each synthesis (`loaded_at_end`), and a
test checks it is not there yet when the audio event, or the audio's first bytes,
arrive.
"""

from __future__ import annotations

import io
import json
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.gpt_sovits_server import FakeGptSovits, Synthesis
from tests.support.upstream_server import serve

VOICES = {"voices": [{"id": "default", "name": "기본", "language": "ko",
                      "ref_audio_path": "/srv/voices/default.wav", "prompt_text": "안녕하세요.",
                      "prompt_lang": "ko"}]}
ONE_SENTENCE = "오늘은 비가 많이 와서 창밖을 오래 바라보면서 따뜻한 차를 천천히 마셨어요."
PIECES = "응. 오늘은 비가 많이 와서, 창밖을 오래 바라보면서, 따뜻한 차를 천천히 마셨어요."
"""In mode 1 GPT-SoVITS sends a sentence's cut5 pieces one by one, so it needs commas."""


@pytest.fixture
def sovits_voices() -> dict[str, object]:
    """The voices of the GPT-SoVITS stand-in (`sovits`, tests/conftest.py)."""
    return VOICES


@pytest.fixture
def api(fake_upstream: Any, sovits: FakeGptSovits) -> Iterator[httpx.Client]:
    """The local runner's app over real HTTP, so chunked responses really stream."""
    from local_runner.app import build_app

    with serve(build_app()) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def _audio_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "audio"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _synthesis_of(fake: FakeGptSovits, text: str) -> Synthesis:
    return next(s for s in reversed(fake.syntheses) if s.text == text)


def _pcm(wav_bytes: bytes) -> bytes:
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        return reader.readframes(reader.getnframes())


def test_silence_from_gpt_sovits_is_a_tts_error_and_nothing_is_stored(
        fake_upstream: Any, sovits: FakeGptSovits, client: TestClient, tmp_path: Path) -> None:
    sovits.fail_after_chunks = 0
    fake_upstream.reply = "안녕! 오늘 어땠어?"
    for mode in (0, 2):
        response = client.post("/api/chat", json={"tts_streaming_mode": mode, "messages": [
            {"role": "user", "content": "안녕"}]})
        data = response.json()["data"]
        assert response.status_code == 200 and data["content"] == fake_upstream.reply
        assert data["audio_url"] is None
        assert data["tts_error"]["code"] == "upstream_error"
    assert _audio_files(tmp_path) == []


def test_silence_from_gpt_sovits_is_a_502_on_the_tts_api(sovits: FakeGptSovits, client: TestClient,
                                                         tmp_path: Path) -> None:
    sovits.fail_after_chunks = 0
    for body in ({"text": "안녕하세요"}, {"text": "안녕하세요", "streaming_mode": 3},
                 {"text": "안녕하세요", "return_binary": True},
                 {"text": "안녕하세요", "return_binary": True, "streaming_mode": 2}):
        response = client.post("/api/tts", json=body)
        assert response.status_code == 502, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "upstream_error", body
    assert "16 kHz silence" in client.post("/api/tts", json={"text": "안녕하세요"}).json()["error"]["message"]
    assert _audio_files(tmp_path) == []


def test_streamed_chat_failing_before_any_audio_reports_the_sentence_and_stores_nothing(
        fake_upstream: Any, sovits: FakeGptSovits, api: httpx.Client, tmp_path: Path) -> None:
    sovits.fail_after_chunks = 0
    fake_upstream.reply = ONE_SENTENCE
    events = _chat_events(api, mode=2)
    audio = [data for name, data in events if name == "audio"]
    # the first piece (cut at a word boundary) and the rest of the sentence
    assert [a["error"]["code"] for a in audio] == ["upstream_error"] * 2
    assert events[-1][0] == "done"
    assert _audio_files(tmp_path) == []


def _chat_events(api: httpx.Client, *, mode: int,
                 on_audio: Callable[[dict[str, Any]], None] | None = None) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with api.stream("POST", "/api/chat", json={"stream": True, "tts_streaming_mode": mode,
                                               "messages": [{"role": "user", "content": "뭐 했어?"}]}
                    ) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                data = json.loads(line[6:])
                events.append((name, data))
                if name == "audio" and on_audio and "error" not in data:
                    on_audio(data)
    return events


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_streamed_chat_announces_audio_at_its_first_chunk_and_the_url_grows(
        fake_upstream: Any, sovits: FakeGptSovits, api: httpx.Client, mode: int) -> None:
    sovits.delay_per_char_s, sovits.chunk_decode_s = 0.06, 0.05  # about 3 s per sentence
    fake_upstream.reply = PIECES if mode == 1 else ONE_SENTENCE
    seen: list[dict[str, Any]] = []

    def on_audio(event: dict[str, Any]) -> None:
        if mode == 1 and "," not in event["text"]:
            return  # one piece: mode 1 has it all at once
        if mode > 1 and event["index"] == 0:
            return  # the first piece, cut at a word boundary, is shorter than one chunk
        synthesis = _synthesis_of(sovits, event["text"])
        assert synthesis.loaded_at_end is None, "the event comes before the sentence is spoken"
        assert event["streaming"] is True and event["duration"] is None
        with api.stream("GET", event["audio_url"]) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "audio/wav"
            assert response.headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in response.headers
            pieces = response.iter_bytes()
            first = next(pieces)
            assert synthesis.loaded_at_end is None, "the first bytes come before the sentence ends"
            body = first + b"".join(pieces)
        assert synthesis.loaded_at_end is not None
        assert body[:4] == b"RIFF" and body[40:44] == bytes(4), "data size 0: length unknown"
        seen.append({**event, "growing": body})

    events = _chat_events(api, mode=mode, on_audio=on_audio)
    assert events[-1][0] == "done"
    assert seen, events
    event = seen[0]
    final = api.get(event["audio_url"])
    assert final.status_code == 200 and "content-length" in final.headers
    assert _pcm(final.content) == event["growing"][44:], "the growing WAV is the stored one"
    assert sovits.requests[-1]["streaming_mode"] == mode


@pytest.mark.parametrize("mode", [2, 3])
def test_streamed_speech_starts_before_the_first_sentence_is_written(
        fake_upstream: Any, sovits: FakeGptSovits, api: httpx.Client, mode: int) -> None:
    """The model holds after four words until the client has the first audio event: only a
    first piece cut at a word boundary, sent between two deltas, lets the turn go on."""
    fake_upstream.reply = "*창밖을 보며* " + ONE_SENTENCE
    fake_upstream.stream_gate = threading.Event()
    fake_upstream.stream_hold_after_words = 5
    seen: list[str] = []

    def on_audio(event: dict[str, Any]) -> None:
        seen.append(event["text"])
        fake_upstream.stream_gate.set()

    events = _chat_events(api, mode=mode, on_audio=on_audio)
    first_audio = next(n for n, (name, _) in enumerate(events) if name == "audio")
    written = "".join(data["content"] for name, data in events[:first_audio] if name == "delta")
    assert written == "*창밖을 보며* 오늘은 비가 많이 "
    assert seen[0] == "오늘은 비가 많이"
    assert "".join(seen[1:2]) == ONE_SENTENCE.removeprefix("오늘은 비가 많이 ")
    assert sovits.requests[0]["text"] == "오늘은 비가 많이"


def test_a_stream_cut_mid_sentence_is_a_second_event_with_the_error_and_a_404(
        fake_upstream: Any, sovits: FakeGptSovits, api: httpx.Client, tmp_path: Path) -> None:
    sovits.fail_after_chunks = 1
    sovits.delay_per_char_s = 0.02
    fake_upstream.reply = ONE_SENTENCE
    events = _chat_events(api, mode=3)
    audio = [data for name, data in events if name == "audio"]
    # the first piece is one chunk and is spoken; the rest of the sentence fails after one
    assert [a["index"] for a in audio] == [0, 1, 1]
    assert audio[1]["streaming"] is True
    assert audio[2]["error"]["code"] == "upstream_error"
    assert "cut its audio stream short" in audio[2]["error"]["message"]
    assert api.get(audio[1]["audio_url"]).status_code == 404
    assert api.get(audio[0]["audio_url"]).status_code == 200
    assert len(_audio_files(tmp_path)) == 1


def test_mode_0_and_the_embedded_engine_keep_whole_sentences(fake_upstream: Any,
                                                             client: TestClient) -> None:
    fake_upstream.reply = "안녕! 오늘 날씨 정말 좋다."
    for mode in (0, 2):  # eSpeak NG speaks faster than real time and does not stream
        response = client.post("/api/chat", json={"stream": True, "tts_streaming_mode": mode,
                                                  "messages": [{"role": "user", "content": "안녕"}]})
        audio = [json.loads(block.split("data: ", 1)[1]) for block in response.text.split("\n\n")
                 if block.startswith("event: audio")]
        assert audio and all(a["duration"] > 0 and "streaming" not in a for a in audio)
        wav = client.get(audio[0]["audio_url"])
        assert wav.status_code == 200 and "content-length" in wav.headers


def test_delayed_speech_in_a_streaming_mode_grows_at_its_url(fake_upstream: Any,
                                                             sovits: FakeGptSovits,
                                                             api: httpx.Client) -> None:
    sovits.delay_per_char_s, sovits.chunk_decode_s = 0.06, 0.05
    fake_upstream.reply = ONE_SENTENCE
    reply = api.post("/api/chat", json={"tts_mode": "delayed", "tts_streaming_mode": 2, "messages": [
        {"role": "user", "content": "안녕"}]}).json()["data"]
    while (status := api.get(reply["audio_url"]).status_code) == 202:
        time.sleep(0.05)
    assert status == 200
    final = api.get(reply["audio_url"])
    assert final.status_code == 200 and len(_pcm(final.content)) > 0


def test_tts_api_streams_the_wav_as_it_is_made_with_return_binary(sovits: FakeGptSovits,
                                                                  api: httpx.Client) -> None:
    sovits.delay_per_char_s, sovits.chunk_decode_s = 0.06, 0.05
    with api.stream("POST", "/api/tts", json={"text": ONE_SENTENCE, "streaming_mode": 3,
                                              "return_binary": True}) as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        pieces = response.iter_bytes()
        first = next(pieces)
        assert sovits.syntheses[-1].loaded_at_end is None, "sent while GPT-SoVITS is still speaking"
        body = first + b"".join(pieces)
    assert body[:4] == b"RIFF" and body[40:44] == bytes(4)
    assert sovits.requests[-1]["streaming_mode"] == 3
    assert len(body) - 44 == 2 * int(32000 * (len(ONE_SENTENCE) * 0.05 + 0.3))


def test_tts_api_stream_cut_by_gpt_sovits_is_cut_for_the_client(sovits: FakeGptSovits,
                                                                api: httpx.Client) -> None:
    sovits.fail_after_chunks = 1
    with pytest.raises(httpx.RemoteProtocolError), api.stream(
            "POST", "/api/tts", json={"text": ONE_SENTENCE, "streaming_mode": 2,
                                      "return_binary": True}) as response:
        assert response.status_code == 200
        response.read()


def test_another_instance_serves_the_growing_wav(fake_upstream: Any, sovits: FakeGptSovits) -> None:
    """Two local runners sharing AUDIO_DIR and Redis: speech made on one grows on the other."""
    from tests.sessions.test_multi_instance import _instances

    sovits.delay_per_char_s, sovits.chunk_decode_s = 0.06, 0.05
    fake_upstream.reply = ONE_SENTENCE
    seen: list[tuple[str, bytes]] = []
    for speaker, listener in _instances({}):

        def on_audio(event: dict[str, Any], listener: httpx.Client = listener) -> None:
            if event["index"] == 0:
                return  # the first piece, cut at a word boundary, is shorter than one chunk
            synthesis = _synthesis_of(sovits, event["text"])
            with listener.stream("GET", event["audio_url"]) as response:
                assert response.status_code == 200
                assert response.headers.get("transfer-encoding") == "chunked"
                pieces = response.iter_bytes()
                first = next(pieces)
                assert synthesis.loaded_at_end is None, "the other instance streams it while spoken"
                seen.append((event["audio_url"], first + b"".join(pieces)))

        events = _chat_events(speaker, mode=3, on_audio=on_audio)
        assert events[-1][0] == "done" and seen
        url, growing = seen[0]
        assert _pcm(listener.get(url).content) == growing[44:]


def test_with_s3_streamed_speech_is_stored_whole_once_spoken(
        fake_upstream: Any, sovits: FakeGptSovits, aws: None, settings_env: Callable[..., None],
        client: TestClient) -> None:
    """S3 cannot append, so nothing grows: mode 2 is asked of GPT-SoVITS, gathered, checked
    and stored whole, and the event comes with its duration, as in mode 0."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="audio-stream-test")
    settings_env(AUDIO_BUCKET="audio-stream-test")
    fake_upstream.reply = ONE_SENTENCE
    response = client.post("/api/chat", json={"stream": True, "tts_streaming_mode": 2,
                                              "messages": [{"role": "user", "content": "뭐 했어?"}]})
    audio = [json.loads(block.split("data: ", 1)[1]) for block in response.text.split("\n\n")
             if block.startswith("event: audio")]
    assert len(audio) == 2, "the first piece, cut at a word boundary, and the rest"
    assert all("streaming" not in a and a["duration"] > 0 for a in audio)
    assert sovits.requests[-1]["streaming_mode"] == 2
    assert "audio-stream-test" in audio[0]["audio_url"] and "X-Amz-Signature" in audio[0]["audio_url"]
    stored = len(boto3.client("s3").list_objects_v2(Bucket="audio-stream-test")["Contents"])

    sovits.fail_after_chunks = 0
    response = client.post("/api/chat", json={"stream": True, "tts_streaming_mode": 2,
                                              "messages": [{"role": "user", "content": "또?"}]})
    assert '"code": "upstream_error"' in response.text
    listing = boto3.client("s3").list_objects_v2(Bucket="audio-stream-test").get("Contents", [])
    assert len(listing) == stored, "the failed sentence left nothing in the bucket"

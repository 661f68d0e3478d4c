"""Issues 6 and 16: time to first audio, sentence-pipelined against whole-reply-then-
synthesize, and streamed speech (GPT-SoVITS `streaming_mode` 2-3) against both.

Same upstreams for all, with realistic delays: an LLM that streams a ten-sentence
Korean reply at `TOKEN_DELAY_S` per word (about Gemma 3 27B's pace on one GPU), and a
GPT-SoVITS (api_v2 stand-in) that takes `SYNTH_BASE_S` plus `SYNTH_PER_CHAR_S` per
character, and speaks `SPEECH_S_PER_CHAR` seconds per character. Streaming, the
stand-in spends that same compute chunk by chunk as `TTS.run` does (16 semantic
tokens, 0.64 s of audio, per chunk) plus `CHUNK_DECODE_S` to decode each chunk.
Pipelined: a streamed chat with TTS on (mode 0), until its first `audio` event.
Streamed: the same in mode 2 or 3, until the first `audio` event (sent when the
sentence's first chunk exists) and until the first bytes of its growing WAV; the modes
take turns, round by round.
Whole: a plain chat in `realtime` mode, whose answer arrives with the whole reply spoken.
Speech cannot start before the words it says exist: the floor under mode 0 is the time
to the first sentence's text (`first_sentence_text_median`); streaming modes may speak
a first piece that ends at a word boundary before the sentence does, so theirs is the
time to that piece's text (`first_piece_text_median`), and "speech after text" is
counted from it.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import bench_env, save
from roleplay.speech.text import spoken_text
from tests.support.fake_llm import FakeLLM
from tests.support.gpt_sovits_server import FakeGptSovits
from tests.support.server_process import server_b_process
from tests.support.upstream_server import serve

REPLY = ("*창밖을 보며* 오늘 비가 많이 오네. 우산은 챙겨 왔어? 나는 이런 날이면 따뜻한 라떼가 생각나. "
         "카페 창가 자리에 앉아서 빗소리를 듣는 걸 좋아하거든. 너도 같이 갈래? 내가 한 잔 살게. "
         "지난번에 말한 책은 다 읽었어? 나는 아직 절반밖에 못 읽었어. "
         "주인공이 비 오는 골목을 걷는 장면이 참 좋더라. 다 읽으면 같이 이야기하자.")
LONG_FIRST = ("*창밖을 보며* 오늘은 아침부터 비가 정말 많이 와서 창가에 앉아 빗소리를 오래 들었어. "
              + REPLY.split("오네. ", 1)[1])
"""The same reply, but its first sentence is long (40 characters: 5.2 s of speech, 130
semantic tokens, eight chunks) where REPLY's is short (12 characters: 1.6 s, 39 tokens)."""
TOKEN_DELAY_S = 0.06
SYNTH_BASE_S = 0.15
SYNTH_PER_CHAR_S = 0.012
CHUNK_DECODE_S = 0.02
SPEECH_S_PER_CHAR = 0.13  # Korean read at about 5 syllables a second, spaces and punctuation included
STREAMING_MODES = (2, 3)
ROUNDS = 5


def _first_streamed_audio(http: httpx.Client, body: dict[str, Any],
                          mode: int) -> dict[str, Any]:
    """Seconds to the first sentence's text (None: not written yet when the audio came), to
    the first piece's text, to the first `audio` event, and to the first bytes of that
    audio's growing WAV."""
    started = time.perf_counter()
    text, sentence_at = "", None
    written: list[tuple[float, str]] = []
    with http.stream("POST", "/api/chat", json={**body, "stream": True, "tts_streaming_mode": mode}
                     ) as response:
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
                continue
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if name == "delta":
                text += data["content"]
                written.append((time.perf_counter() - started, spoken_text(text)))
                if sentence_at is None and any(mark in text.split("*")[-1] for mark in ".?!"):
                    sentence_at = written[-1][0]
            elif name == "audio":
                event_at = time.perf_counter() - started
                if "error" in data:
                    raise RuntimeError(f"the first sentence failed: {data}")
                with http.stream("GET", data["audio_url"]) as audio:
                    next(audio.iter_raw())
                    bytes_at = time.perf_counter() - started
                piece_at = next((at for at, said in written if said.startswith(data["text"])), event_at)
                return {"sentence": sentence_at, "piece": piece_at, "event": event_at,
                        "bytes": bytes_at}
    raise RuntimeError("the stream carried no audio")


def _alternating(http: httpx.Client, body: dict[str, Any], name: str, modes: tuple[int, ...],
                 rounds: int) -> dict[int, list[dict[str, Any]]]:
    """Each mode once per round, in turn, so the machine's drift hits every mode alike."""
    runs: dict[int, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for n in range(rounds):
        for mode in modes:
            runs[mode].append(_first_streamed_audio(http, {**body, "session_id": f"{name}{mode}-{n}"},
                                                    mode))
    return runs


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def _ms_or_none(values: list[float | None]) -> float | None:
    """The median of the runs that had the value, None if most did not."""
    known = [value for value in values if value is not None]
    return _ms(known) if len(known) * 2 > len(values) else None


def _whole(http: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    data = http.post("/api/chat", json={**body, "tts_mode": "realtime"}).json()["data"]
    assert data["audio_url"], data
    return time.perf_counter() - started


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    llm = FakeLLM(reply=REPLY, token_delay_s=TOKEN_DELAY_S)
    sovits = FakeGptSovits(delay_s=SYNTH_BASE_S, delay_per_char_s=SYNTH_PER_CHAR_S,
                           chunk_decode_s=CHUNK_DECODE_S, seconds_per_char=SPEECH_S_PER_CHAR)
    with tempfile.TemporaryDirectory() as folder:
        voices = Path(folder) / "voices.json"
        voices.write_text(json.dumps({"voices": [{
            "id": "default", "name": "민지", "language": "ko", "ref_audio_path": "/srv/minji.wav",
            "prompt_text": "안녕하세요.", "prompt_lang": "ko"}]}, ensure_ascii=False))
        with bench_env("tts") as (redis_url, prefix), serve(llm.app()) as llm_url, \
                serve(sovits.build()) as tts_url, server_b_process({
                    "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": llm_url,
                    "TTS_BASE_URL": tts_url, "VOICES_FILE": str(voices),
                    "AUDIO_DIR": str(Path(folder) / "audio"), "MAX_CONCURRENT_USERS": "1000"}) as (api, _), \
                httpx.Client(base_url=api, timeout=120) as http:
            body = {"messages": [{"role": "user", "content": "비 오는 날 뭐 하고 싶어?"}]}
            streamed = _alternating(http, body, "s", (0, *STREAMING_MODES), rounds)
            pipelined = [run["event"] for run in streamed[0]]
            whole = [_whole(http, {**body, "session_id": f"w{n}"}) for n in range(rounds)]
            llm.reply = LONG_FIRST
            long_first = _alternating(http, body, "l", (0, 3), rounds)
    words = len(REPLY.split(" "))
    sentences = sum(REPLY.count(mark) for mark in ".?!")
    times = {
        "sentence_pipelined_median": round(statistics.median(pipelined) * 1000, 1),
        "whole_reply_then_synthesize_median": round(statistics.median(whole) * 1000, 1),
    }
    times["ratio_whole_over_pipelined"] = round(
        times["whole_reply_then_synthesize_median"] / times["sentence_pipelined_median"], 2)
    times["pipelined_as_fraction_of_whole"] = round(
        times["sentence_pipelined_median"] / times["whole_reply_then_synthesize_median"], 3)

    def summary(runs: list[dict[str, Any]], against: float) -> dict[str, Any]:
        first = _ms([run["event"] for run in runs])
        text = _ms_or_none([run["sentence"] for run in runs])
        piece = _ms([run["piece"] for run in runs])
        return {"first_sentence_text_median": text, "first_piece_text_median": piece,
                "first_audio_event_median": first,
                "first_audio_bytes_median": _ms([run["bytes"] for run in runs]),
                "speech_after_text_ms": round(first - piece, 1),
                "as_fraction_of_pipelined": round(first / against, 3)}

    today = times["sentence_pipelined_median"]
    streaming = {f"mode_{mode}": summary(runs, today) for mode, runs in streamed.items()}
    long_today = _ms([run["event"] for run in long_first[0]])
    long_variant = {f"mode_{mode}": summary(runs, long_today) for mode, runs in long_first.items()}
    result = {
        "setup": {"reply_sentences": sentences, "reply_chars": len(REPLY), "reply_words": words,
                  "llm_ms_per_word": TOKEN_DELAY_S * 1000,
                  "tts_ms": f"{SYNTH_BASE_S * 1000:g} + {SYNTH_PER_CHAR_S * 1000:g} per char",
                  "tts_streaming": f"the same compute per 16-token chunk, + {CHUNK_DECODE_S * 1000:g} ms "
                                   "decode per chunk",
                  "speech_s_per_char": SPEECH_S_PER_CHAR,
                  "rounds": rounds},
        "time_to_first_audio_ms": times,
        "streaming_first_audio_ms": streaming,
        "long_first_sentence_ms": long_variant,
    }
    save("tts", result)
    return result


if __name__ == "__main__":
    run()

"""Issue 6: time to first audio, sentence-pipelined against whole-reply-then-synthesize.

Same upstreams for both, with realistic delays: an LLM that streams a ten-sentence
Korean reply at `TOKEN_DELAY_S` per word (about Gemma 3 27B's pace on one GPU), and a
GPT-SoVITS (api_v2 stand-in) that takes `SYNTH_BASE_S` plus `SYNTH_PER_CHAR_S` per
character. Pipelined: a streamed chat with TTS on, until its first `audio` event.
Whole: a plain chat in `realtime` mode, whose answer arrives with the whole reply spoken.
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
from tests.fake_llm import FakeLLM
from tests.gpt_sovits_server import FakeGptSovits
from tests.server_process import server_b_process
from tests.upstream_server import serve

REPLY = ("*창밖을 보며* 오늘 비가 많이 오네. 우산은 챙겨 왔어? 나는 이런 날이면 따뜻한 라떼가 생각나. "
         "카페 창가 자리에 앉아서 빗소리를 듣는 걸 좋아하거든. 너도 같이 갈래? 내가 한 잔 살게. "
         "지난번에 말한 책은 다 읽었어? 나는 아직 절반밖에 못 읽었어. "
         "주인공이 비 오는 골목을 걷는 장면이 참 좋더라. 다 읽으면 같이 이야기하자.")
TOKEN_DELAY_S = 0.06
SYNTH_BASE_S = 0.15
SYNTH_PER_CHAR_S = 0.012
ROUNDS = 5


def _first_audio(http: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    with http.stream("POST", "/api/chat", json={**body, "stream": True}) as response:
        for line in response.iter_lines():
            if line == "event: audio":
                return time.perf_counter() - started
    raise RuntimeError("the stream carried no audio")


def _whole(http: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    data = http.post("/api/chat", json={**body, "tts_mode": "realtime"}).json()["data"]
    assert data["audio_url"], data
    return time.perf_counter() - started


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    llm = FakeLLM(reply=REPLY, token_delay_s=TOKEN_DELAY_S)
    sovits = FakeGptSovits(delay_s=SYNTH_BASE_S, delay_per_char_s=SYNTH_PER_CHAR_S)
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
            pipelined = [_first_audio(http, {**body, "session_id": f"p{n}"}) for n in range(rounds)]
            whole = [_whole(http, {**body, "session_id": f"w{n}"}) for n in range(rounds)]
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
    result = {
        "setup": {"reply_sentences": sentences, "reply_chars": len(REPLY), "reply_words": words,
                  "llm_ms_per_word": TOKEN_DELAY_S * 1000,
                  "tts_ms": f"{SYNTH_BASE_S * 1000:g} + {SYNTH_PER_CHAR_S * 1000:g} per char",
                  "rounds": rounds},
        "time_to_first_audio_ms": times,
    }
    save("tts", result)
    return result


if __name__ == "__main__":
    run()

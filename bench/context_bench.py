"""Does turn 1,000 cost what turn 10 does, and does a summary ever make the user wait?

Server B runs under uvicorn in its own process against a real Redis. The LLM is a
scripted OpenAI-compatible upstream that answers a turn in `REPLY_DELAY_S` and a summary
in `SUMMARY_DELAY_S`, so backend time is the turn's latency minus the reply delay.
Server B's CPU time is read from the kernel around every turn; summaries run in the
background of that process, so their CPU lands on the turns that follow them. A turn
that schedules a summary is the one whose prompt has grown largest, and each message
costs CPU, so it is also compared with the turn just before it (one message pair less).

This VM's speed drifts over a run by more than the effect measured, so turn 10 and
turn 1,000 are measured side by side: one long session is played to turn 990, twenty
short sessions to turn 9, and then the short sessions' tenth turns alternate with the
long session's turns 991-1010.
"""

from __future__ import annotations

import statistics
import time
from itertools import pairwise
from typing import Any

import httpx

from bench.harness import bench_env, cpu_ms, save, summary_ms
from tests.support.fake_llm import FakeLLM
from tests.support.server_process import server_b_process
from tests.support.upstream_server import serve

TURNS = 1010
PAIRS = 20
REPLY_DELAY_S = 0.02
SUMMARY_DELAY_S = 0.1
PERSONA = "밝고 다정한 바리스타 민지"


def _line(n: int) -> str:
    return f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"


class _Conversations:
    """Plays turns through Server B, recording each one's latency, CPU and prompt size."""

    def __init__(self, http: httpx.Client, pid: int, llm: FakeLLM) -> None:
        self.http, self.pid, self.llm = http, pid, llm

    def turn(self, session_id: str, n: int) -> dict[str, Any]:
        cpu_before = cpu_ms(self.pid)
        started = time.perf_counter()
        response = self.http.post("/api/chat", json={
            "session_id": session_id, "max_tokens": 256, "persona": PERSONA, "tts_enabled": False,
            "messages": [{"role": "user", "content": _line(n)}]})
        elapsed = time.perf_counter() - started
        used_ms = cpu_ms(self.pid) - cpu_before
        data = response.json()["data"]
        return {"turn": n + 1, "s": elapsed, "cpu_ms": used_ms,
                "prompt_messages": len(self.llm.chat_prompts[-1]),
                "scheduled": data["summary_scheduled"], "dropped": data["dropped_messages"]}


def _cpu(selected: list[dict[str, Any]]) -> dict[str, float]:
    values = [r["cpu_ms"] for r in selected]
    return {"median_ms": round(statistics.median(values), 2), "mean_ms": round(statistics.fmean(values), 2)}


def _backend(selected: list[dict[str, Any]]) -> dict[str, float]:
    return summary_ms([r["s"] - REPLY_DELAY_S for r in selected])


def run(turns: int = TURNS) -> dict[str, Any]:
    llm = FakeLLM(reply="응, 나도 비 오는 날이 좋아. 따뜻한 차 한 잔 어때?",
                  reply_delay_s=REPLY_DELAY_S, summary_delay_s=SUMMARY_DELAY_S)
    rows: list[dict[str, Any]] = []
    tenth: list[dict[str, Any]] = []
    with bench_env("context") as (redis_url, prefix), serve(llm.app()) as upstream, server_b_process({
        "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": upstream,
        "LLM_SERVICE": "vllm", "MAX_CONCURRENT_USERS": "1000",
    }) as (api, pid), httpx.Client(base_url=api, timeout=60) as http:
        play = _Conversations(http, pid, llm)
        rows += [play.turn("long", n) for n in range(turns - PAIRS)]
        for short in range(PAIRS):
            for n in range(9):
                play.turn(f"short-{short}", n)
        for pair in range(PAIRS):
            tenth.append(play.turn(f"short-{pair}", 9))
            rows.append(play.turn("long", turns - PAIRS + pair))
        view = http.get("/api/chat/sessions/long").json()["data"]

    buckets = [rows[i:i + 10] for i in range(0, len(rows), 10)]
    warm = rows[20:]
    late = rows[-PAIRS:]
    per_message = statistics.linear_regression(
        [r["prompt_messages"] for r in warm], [r["cpu_ms"] for r in warm]).slope
    result = {
        "setup": {"turns": turns, "reply_delay_ms": REPLY_DELAY_S * 1000,
                  "summary_delay_ms": SUMMARY_DELAY_S * 1000, "max_context_tokens": 4096,
                  "recent_turns_to_keep": 18, "tts": "off (speech is benchmarked in tts)",
                  "turn_10_vs_1000": f"{PAIRS} tenth turns of short sessions alternating with "
                                     f"turns {turns - PAIRS + 1}-{turns} of the long one"},
        "server_cpu_ms_turn_10": _cpu(tenth),
        "server_cpu_ms_turn_1000": _cpu(late),
        "backend_ms_turn_10": _backend(tenth),
        "backend_ms_turn_1000": _backend(late),
        "server_cpu_ms_turns_21_120": _cpu(rows[20:120]),
        "server_cpu_ms_turns_891_990": _cpu(rows[890:990]),
        "backend_ms_turns_21_120": _backend(rows[20:120]),
        "backend_ms_turns_891_990": _backend(rows[890:990]),
        "turns_that_scheduled_a_summary": _backend([r for r in warm if r["scheduled"]]),
        "turns_that_did_not": _backend([r for r in warm if not r["scheduled"]]),
        "turns_just_before_those_that_scheduled": _backend(
            [before for before, r in pairwise(warm) if r["scheduled"] and not before["scheduled"]]),
        "turns_with_dropped_messages": sum(1 for r in rows if r["dropped"]),
        "summaries_made": len(llm.summary_prompts),
        "transcript_messages": view["message_count"],
        "server_cpu_ms_per_prompt_message": round(per_message, 3),
        "prompt_messages_at_turn_10": tenth[0]["prompt_messages"],
        "prompt_messages_turns_991_1010": [min(r["prompt_messages"] for r in late),
                                           max(r["prompt_messages"] for r in late)],
        "largest_prompt_tokens": max(llm.true_tokens(p) for p in llm.chat_prompts),
        "per_10_turns": [{"turn": b[0]["turn"],
                          "backend_ms": round(statistics.median(r["s"] - REPLY_DELAY_S for r in b) * 1000, 2),
                          "server_cpu_ms": round(statistics.median(r["cpu_ms"] for r in b), 2)}
                         for b in buckets],
    }
    save("context", result)
    return result


if __name__ == "__main__":
    run()

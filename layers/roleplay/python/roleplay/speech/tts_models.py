"""The speech API's request and answers, as in the design document (4.4, 5.4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from roleplay.characters.ids import ID_PATTERN

Language = Literal["ko", "en", "ja", "zh", "yue", "auto"]


class TtsRequest(BaseModel):
    """Voices are named by id only: a client can never hand the engine a path."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(max_length=20000)]
    voice_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] = "default"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    language: Language | None = None
    streaming_mode: Annotated[int, Field(ge=0, le=3)] = 0
    return_binary: bool = False
    session_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = Field(
        default=None, description="The chat session this speech belongs to (informative: the "
        "caller's place under the cap is the caller's, signed in or an anonymous client).")


class TtsResult(BaseModel):
    audio_url: str
    file_id: str
    duration: float = Field(description="Seconds of audio.")
    media_type: str
    voice_id: str


class AudioPending(BaseModel):
    file_id: str
    status: Literal["pending"] = "pending"

"""Requests and answers of the conversation-control endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from roleplay.chat.models import ReplyAlternative


class GenerateRequest(BaseModel):
    """`regenerate` and `continue`: how to generate, as on `/api/chat`."""

    model_config = ConfigDict(extra="forbid")

    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, Field(ge=1, le=8192)] = 512
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    stream: bool = False
    tts_enabled: bool = True
    tts_mode: Literal["realtime", "delayed", "on_click"] = "realtime"
    tts_delay_ms: Annotated[int, Field(ge=0, le=60000)] = 0
    """The frontend's own playback delay, accepted as on `/api/chat`."""
    tts_streaming_mode: Annotated[int, Field(ge=0, le=3)] = 0


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Annotated[int, Field(ge=0)]


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Annotated[str, StringConstraints(min_length=1, max_length=16000)]


class SummaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=8000)]


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class MessageView(BaseModel):
    """A stored message as the transcript endpoint shows it."""

    id: str
    index: int
    role: str
    content: str
    at: float
    tokens: int
    cut: bool = False
    greeting: bool = False
    edited: bool = False
    alternatives: list[ReplyAlternative] | None = None


class MessagePage(BaseModel):
    messages: list[MessageView]
    total: int
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last.")
    summary_upto: int = -1


class MessageChanged(BaseModel):
    session_id: str
    message: MessageView
    summary_invalidated: bool = False


class MessagesDeleted(BaseModel):
    session_id: str
    deleted: int
    message_count: int
    summary_invalidated: bool = False


class SummaryView(BaseModel):
    session_id: str
    summary: str
    summary_upto: int


class PinsView(BaseModel):
    session_id: str
    pins: list[dict[str, str]]
    max_pins: int

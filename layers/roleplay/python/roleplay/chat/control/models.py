"""Requests and answers of the conversation-control endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from roleplay.chat.models import ReplyAlternative, TurnOptions


class GenerateRequest(TurnOptions):
    """`regenerate` and `continue`: how to generate, as on `/api/chat`."""


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

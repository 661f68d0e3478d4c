"""What a chat turn tells the operator: its metrics, its log line's facts, and its quotas."""

from __future__ import annotations

import time

from roleplay.chat.models import ChatReply, ChatRequest
from roleplay.core import metrics, request_context
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.ops import quotas


async def turn_answered(request: ChatRequest, reply: ChatReply, user: User) -> None:
    """Called once a turn's reply is stored (streamed or not)."""
    record = request_context.current()
    if record is not None:
        metrics.observe("turn_seconds", time.perf_counter() - record.started)
    metrics.inc("turns_total")
    if reply.dropped_messages:
        metrics.inc("dropped_messages_total", reply.dropped_messages)
    usage = reply.usage
    request_context.note(
        user=request_context.hashed(user.id), session=reply.session_id, model=reply.model,
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        summary_scheduled=reply.summary_scheduled,
        tts_error=reply.tts_error.code if reply.tts_error else None)
    if get_settings().log_content:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), None)
        request_context.note(message=last, reply=reply.content)
    await quotas.add_tokens(user, (usage.prompt_tokens or 0) + (usage.completion_tokens or 0))


def first_token() -> None:
    record = request_context.current()
    if record is not None:
        elapsed = time.perf_counter() - record.started
        metrics.observe("ttft_seconds", elapsed)
        request_context.note(ttft_ms=round(elapsed * 1000, 1))


async def spoken(user: User, seconds: float | None, *, failed: bool = False) -> None:
    """One reply's (or sentence's) speech: the first one marks time to first audio."""
    if failed:
        metrics.inc("speech_failures_total")
        return
    record = request_context.current()
    if record is not None and "first_audio_ms" not in record.fields:
        elapsed = time.perf_counter() - record.started
        metrics.observe("first_audio_seconds", elapsed)
        request_context.note(first_audio_ms=round(elapsed * 1000, 1))
    if record is not None and seconds:
        record.fields["speech_s"] = round(record.fields.get("speech_s", 0) + seconds, 3)
    await quotas.add_speech(user, seconds or 0)

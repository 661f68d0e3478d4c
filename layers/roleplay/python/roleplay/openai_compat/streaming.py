"""OpenAI's streamed chat format: `chat.completion.chunk` events, then `data: [DONE]`.

The first chunk carries the assistant role, each next one a content delta, the last
choice chunk the finish reason; with `stream_options.include_usage` one more chunk
carries the usage with no choices (and every earlier chunk `usage: null`), as OpenAI
sends it.

A failure after the stream began (the 200 is sent) ends it with one chunk that is both
an error and a last choice, then `[DONE]` (`ChunkFormat.failure`), as OpenRouter ends
a failed stream: `error` is OpenAI's error object, which the `openai` SDKs raise as
`APIError` (`openai/_streaming.py`: any event with `error`) and SillyTavern shows as a
toast (`tryParseStreamingError`); `choices` holds an empty delta with `finish_reason:
"error"`, so a client that reads `choices[0].delta.content` of every event, as
SillyTavern does next (`getStreamingReply`), reads nothing instead of failing on a
missing `choices`, and keeps the text it had; `[DONE]` ends its read loop as usual.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from roleplay.openai_compat.errors import openai_error
from roleplay.openai_compat.models import CompletionUsage

DONE = "data: [DONE]\n\n"


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass(frozen=True)
class ChunkFormat:
    """What every chunk of one stream repeats."""

    completion_id: str
    created: int
    model: str
    include_usage: bool

    def _chunk(self, choices: list[dict[str, Any]], usage: CompletionUsage | None = None,
               error: dict[str, Any] | None = None) -> str:
        data: dict[str, Any] = {"id": self.completion_id, "object": "chat.completion.chunk",
                                "created": self.created, "model": self.model,
                                "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            data["usage"] = usage.model_dump() if usage else None
        if error is not None:
            data.update(error)
        return event(data)

    def role(self) -> str:
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def delta(self, content: str) -> str:
        return self._chunk([{"index": 0, "delta": {"content": content}, "logprobs": None,
                             "finish_reason": None}])

    def finish(self, finish_reason: str) -> str:
        return self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                             "finish_reason": finish_reason}])

    def usage(self, usage: CompletionUsage) -> str:
        return self._chunk([], usage)

    def failure(self, status: int, message: str, code: str | None) -> str:
        """The stream's end after a failure: the error as a last choice chunk, then
        `[DONE]` (the module's docstring says why both)."""
        return self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                             "finish_reason": "error"}],
                           error=openai_error(status, message, code)) + DONE


def error_event(status: int, message: str, code: str | None, model: str = "") -> str:
    """`ChunkFormat.failure` for a caller without the stream's format (a new id)."""
    return ChunkFormat(completion_id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                       model=model, include_usage=False).failure(status, message, code)


def finish_reason(upstream: str | None) -> str:
    """OpenAI's vocabulary: `length` when the reply hit max tokens, else `stop`."""
    return upstream if upstream in {"stop", "length", "content_filter"} else "stop"

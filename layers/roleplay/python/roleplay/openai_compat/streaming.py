"""OpenAI's streamed chat format: `chat.completion.chunk` events, then `data: [DONE]`.

The first chunk carries the assistant role, each next one a content delta, the last
choice chunk the finish reason; with `stream_options.include_usage` one more chunk
carries the usage with no choices (and every earlier chunk `usage: null`), as OpenAI
sends it. A failure mid-stream is an `error` event, which the SDKs raise.
"""

from __future__ import annotations

import json
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

    def _chunk(self, choices: list[dict[str, Any]], usage: CompletionUsage | None = None
               ) -> str:
        data: dict[str, Any] = {"id": self.completion_id, "object": "chat.completion.chunk",
                                "created": self.created, "model": self.model,
                                "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            data["usage"] = usage.model_dump() if usage else None
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


def error_event(status: int, message: str, code: str) -> str:
    return event(openai_error(status, message, code))


def finish_reason(upstream: str | None) -> str:
    """OpenAI's vocabulary: `length` when the reply hit max tokens, else `stop`."""
    return upstream if upstream in {"stop", "length", "content_filter"} else "stop"

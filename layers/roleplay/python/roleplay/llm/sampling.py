"""How a reply is sampled: one light declaration shared by the request models and the
LLM client (a cold start that only validates a request imports no HTTP client)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """As every request model declares it (`chat.models.TurnOptions`): a new knob is added
    here, there and in each upstream dialect's payload."""

    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    stop: tuple[str, ...] = ()

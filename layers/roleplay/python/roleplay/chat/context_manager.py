"""Fits a conversation of any length into the model's context, and says when to summarize.

The budget for history is `MAX_CONTEXT_TOKENS` minus the reply's `max_tokens` minus
the system prompt (persona, then the rolling summary, then the episodes recalled from
memory, which never take more than a quarter of what the persona leaves). Everything here works on
token counts stored with each message and each recalled episode, corrected by the model's
learned ratio, so planning a turn costs the same at turn 10 and at turn 1,000.

Past `SUMMARY_THRESHOLD` of the budget a summary is scheduled off the request path.
Only when the next prompt would not fit at all does the request path summarize, and
if even that is not enough the oldest verbatim messages are left out of the prompt
(never out of the transcript) and the reply says how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from roleplay.characters.persona import PersonaLanguage, summary_block
from roleplay.chat.prompt import build_prompt
from roleplay.chat.token_ratio import corrected
from roleplay.core.errors import BadRequest
from roleplay.core.settings import Settings
from roleplay.core.token_counter import message_tokens
from roleplay.llm.chat_message import ChatMessage
from roleplay.memory.block import MemoryBlock
from roleplay.sessions.store import StoredMessage, Window

MIN_HISTORY_BUDGET = 64
"""Fewer tokens than this for history means the request cannot make a useful prompt."""


def stored_tokens(message: StoredMessage) -> int:
    """A message's prompt cost as stored with it (counted once, when it arrived)."""
    return message.tokens or message_tokens(message.content)


def stored_costs(messages: Sequence[StoredMessage]) -> list[int]:
    """`stored_tokens` of each message, in one comprehension: this runs over every window
    on every turn."""
    return [m.tokens or message_tokens(m.content) for m in messages]


@dataclass(frozen=True)
class PlanInputs:
    """What a plan was made from, so it can be made again with a better ratio."""

    window: Window
    persona: str
    summary: str | None
    max_tokens: int
    ratio: float
    character_name: str | None
    language: PersonaLanguage
    memory: MemoryBlock | None = None


@dataclass(frozen=True)
class ContextPlan:
    prompt: list[ChatMessage]
    local_tokens: int
    """The whole prompt in local (cl100k) tokens: what the upstream's count is compared to."""
    prompt_tokens: int
    history_budget: int
    history_tokens: int
    context_summarized: bool
    dropped_messages: int
    context_tokens: int | None = None
    """The context planned for (MAX_CONTEXT_TOKENS clamped to the upstream's): Ollama's num_ctx."""
    inputs: PlanInputs | None = field(default=None, compare=False, repr=False)
    window_local_tokens: int = field(default=0, compare=False, repr=False)
    """The whole window's local tokens, before any message was left out: whether the turn
    calls for a summary is judged on it once the reply is stored (`chat.service`)."""


class ContextManager:
    def __init__(self, settings: Settings, max_context: int | None = None) -> None:
        self.settings = settings
        self.max_context = max_context or settings.max_context_tokens
        """The prompt and reply's room: `MAX_CONTEXT_TOKENS`, or less if the upstream has less."""

    def system_prompt(self, persona: str, summary: str | None, language: PersonaLanguage,
                      memory: MemoryBlock | None = None) -> str:
        """The persona, the summary, then the recalled episodes (`memory.recall`'s block)."""
        parts = [persona]
        if summary:
            parts.append(summary_block(summary, language))
        if memory:
            parts.append(memory.text)
        return "\n\n".join(parts)

    def system_tokens(self, persona: str, summary: str | None, language: PersonaLanguage,
                      memory: MemoryBlock | None = None) -> int:
        """The system prompt's local tokens: the persona and summary counted (the same text
        turn after turn, which the counter memoises), the memory block's as it carries them
        (new text most turns: encoding it would cost more than recalling it)."""
        return (message_tokens(self.system_prompt(persona, summary, language))
                + (memory.tokens if memory else 0))

    def memory_budget(self, system_local: int, max_tokens: int, ratio: float) -> int:
        """Local tokens the recalled episodes may take: `MEMORY_TOKENS`, and never more than
        a quarter of what the reply and the system prompt leave, so memory never crowds
        out the recent turns in a small context."""
        room = self.max_context - max_tokens - corrected(system_local, ratio)
        return max(0, min(self.settings.memory_tokens, int(room / 4 / ratio)))

    def history_budget(self, system_local: int, max_tokens: int, ratio: float) -> int:
        budget = self.max_context - max_tokens - corrected(system_local, ratio)
        if budget < MIN_HISTORY_BUDGET:
            raise BadRequest(
                f"max_tokens={max_tokens} and the persona leave no room for the conversation in "
                f"the model's context of {self.max_context} tokens; "
                "lower max_tokens or shorten the persona", code="context_too_small")
        return budget

    def check_turn(self, system: str, max_tokens: int, ratio: float,
                   message_costs: Sequence[int]) -> None:
        """Refuses, before anything of the turn is stored, a turn that can never fit: no room
        for any history, or a message longer than all the room there is."""
        budget = self.history_budget(message_tokens(system), max_tokens, ratio)
        if any(corrected(cost, ratio) > budget for cost in message_costs):
            raise BadRequest(
                f"a message is longer than the {budget} tokens the model's context has room "
                "for; send a shorter message", code="message_too_long")

    def window_tokens(self, messages: Sequence[StoredMessage]) -> int:
        return sum(stored_costs(messages))

    def summary_due_now(self, window: Window, system_local: int, max_tokens: int, ratio: float,
                        costs: Sequence[int] | None = None) -> bool:
        """The next prompt would not fit at all, and a summary could make room: the one
        case the request path summarizes itself. `system_local`: `system_tokens`; `costs`:
        the window's `stored_costs` when the caller has them."""
        budget = self.history_budget(system_local, max_tokens, ratio)
        local = sum(costs) if costs is not None else self.window_tokens(window.messages)
        fits = window.unread == 0 and corrected(local, ratio) <= budget
        return not fits and self.summarizable_upto(window.length) > window.watermark

    def plan(
        self,
        window: Window,
        *,
        persona: str,
        summary: str | None,
        max_tokens: int,
        ratio: float,
        character_name: str | None,
        language: PersonaLanguage,
        memory: MemoryBlock | None = None,
        costs: Sequence[int] | None = None,
    ) -> ContextPlan:
        """`costs`: the window's `stored_costs` when the caller has them (one pass over the
        window's messages per turn, not one per step)."""
        system = self.system_prompt(persona, summary, language, memory)
        system_local = self.system_tokens(persona, summary, language, memory)
        budget = self.history_budget(system_local, max_tokens, ratio)
        kept = list(window.messages)
        costs = list(costs) if costs is not None else stored_costs(kept)
        history_local = window_local = sum(costs)
        dropped = 0
        while kept and corrected(history_local, ratio) > budget:
            if len(kept) == 1:
                raise BadRequest(
                    f"the newest message alone is longer than the {budget} tokens the model's "
                    "context has room for; send a shorter message", code="message_too_long")
            history_local -= costs.pop(0)
            kept.pop(0)
            dropped += 1
        first_index = window.first_index + dropped
        prompt = build_prompt(system, kept,
                              character_name=character_name, language=language,
                              continued=first_index > 0)
        local = system_local + history_local
        return ContextPlan(
            prompt=prompt, local_tokens=local, prompt_tokens=corrected(local, ratio),
            history_budget=budget, history_tokens=corrected(history_local, ratio),
            context_summarized=bool(summary), dropped_messages=dropped + window.unread,
            context_tokens=self.max_context,
            inputs=PlanInputs(window, persona, summary, max_tokens, ratio, character_name, language,
                              memory),
            window_local_tokens=window_local,
        )

    def summarizable_upto(self, length: int) -> int:
        """The last index a summary may cover: all but the `RECENT_TURNS_TO_KEEP` newest."""
        return length - self.settings.recent_turns_to_keep - 1

    def needs_summary(self, *, history_tokens: int, budget: int, length: int, watermark: int) -> bool:
        """Past the threshold, with something older than the recent window to fold in."""
        over = history_tokens >= self.settings.summary_threshold * budget
        return over and self.summarizable_upto(length) > watermark

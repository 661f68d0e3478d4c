"""Makes any conversation a prompt Gemma 3's chat template accepts.

vLLM renders Gemma 3 with a template that raises unless: at most one system message,
first; then user and assistant strictly alternating, starting with user. Clients send
greetings first, double messages, stray system notes; this fixes all of it here, in
one place, whatever the transcript or a summary adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from roleplay.characters.persona import PersonaLanguage, opening_note
from roleplay.llm.chat_message import ChatMessage, prompt_message


class Said(Protocol):
    """A message as the prompt reads it: a `ChatMessage`, or a stored message as it is
    (a window's hundreds of messages are not copied on every turn)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

CONTINUE_PROMPT = {"ko": "(대화를 시작해 주세요.)", "en": "(Please begin the conversation.)"}


def build_prompt(
    system: str | None,
    history: Sequence[Said],
    *,
    character_name: str | None = None,
    language: PersonaLanguage = "ko",
    extra_system: Iterable[str] = (),
    continued: bool = False,
) -> list[ChatMessage]:
    """One system message, then user/assistant alternating from user, ending on user.

    `continued`: `history` does not start at the conversation's beginning (a summary or
    the budget left earlier turns out), so a leading character line is not a greeting."""
    system_parts = [system] if system else []
    system_parts += [part for part in extra_system if part]
    turns: list[ChatMessage] = []
    last_role: str | None = None  # turns[-1]'s role, kept apart: read on every message
    for message in history:
        content = message.content.strip()
        if not content:
            continue
        role = message.role
        if role == "system":
            system_parts.append(content)
        elif role == last_role:
            turns[-1] = prompt_message(role, f"{turns[-1].content}\n\n{content}")
        elif last_role is None and role == "assistant":
            system_parts.append(opening_note(character_name, content, language, continued=continued))
        else:
            turns.append(prompt_message(role, content))
            last_role = role
    if last_role != "user":
        turns.append(ChatMessage("user", CONTINUE_PROMPT[language]))
    prompt = [ChatMessage("system", "\n\n".join(system_parts))] if system_parts else []
    return prompt + turns


def is_gemma_valid(messages: Sequence[ChatMessage]) -> bool:
    """The rule Gemma 3's template enforces, for tests and assertions."""
    body = messages[1:] if messages and messages[0].role == "system" else messages
    return bool(body) and all(
        m.role == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(body)
    )

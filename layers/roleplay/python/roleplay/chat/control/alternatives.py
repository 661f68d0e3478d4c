"""A regenerated reply's versions ("swipes"): all kept in the message, one selected.

The stored message's `content` (and `tokens`) is always the selected version, so a
prompt, a summary or a token count never needs to know about the others.
"""

from __future__ import annotations

from roleplay.chat.models import ReplyAlternative
from roleplay.core.token_counter import message_tokens
from roleplay.sessions.store import StoredMessage

MAX_ALTERNATIVES = 10
"""Versions kept per reply; past it the oldest one not selected goes."""


def versions(message: StoredMessage) -> list[str]:
    return list(message.alternatives) if message.alternatives else [message.content]


def selected_index(message: StoredMessage) -> int:
    return message.selected if message.alternatives and message.selected is not None else 0


def listing(message: StoredMessage) -> list[ReplyAlternative]:
    chosen = selected_index(message)
    return [ReplyAlternative(index=n, content=text, selected=n == chosen)
            for n, text in enumerate(versions(message))]


def with_new_version(message: StoredMessage, reply: StoredMessage) -> StoredMessage:
    """`message` with `reply`'s text added as a version and selected."""
    texts = [*versions(message), reply.content]
    if len(texts) > MAX_ALTERNATIVES:
        texts.pop(0 if selected_index(message) != 0 else 1)
    return message.model_copy(update={
        "content": reply.content, "tokens": reply.tokens, "at": reply.at, "cut": reply.cut,
        "edited": False, "alternatives": texts, "selected": len(texts) - 1})


def with_selected(message: StoredMessage, index: int) -> StoredMessage:
    texts = versions(message)
    return message.model_copy(update={
        "content": texts[index], "tokens": message_tokens(texts[index]), "cut": False,
        "alternatives": texts if len(texts) > 1 else None,
        "selected": index if len(texts) > 1 else None})


def with_content(message: StoredMessage, content: str, **flags: bool) -> StoredMessage:
    """`message` with new text; the selected version changes with it."""
    update: dict[str, object] = {"content": content, "tokens": message_tokens(content), **flags}
    if message.alternatives:
        texts = versions(message)
        texts[selected_index(message)] = content
        update["alternatives"] = texts
    return message.model_copy(update=update)

"""What the session endpoints do: show a conversation, delete it (from Redis, the cold
store and the user's list), free a user's place."""

from __future__ import annotations

from roleplay.characters.lorebook.fired_store import load_fired
from roleplay.chat.context_manager import ContextManager
from roleplay.chat.models import SessionEnded, SessionTokens, SessionView, SlotReleased
from roleplay.chat.token_ratio import token_ratio
from roleplay.core.errors import NotFound
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.llm.upstream_limits import context_budget
from roleplay.sessions import conversation_archive
from roleplay.sessions.concurrent_user_limiter import ConcurrentUserLimiter
from roleplay.sessions.scope import owned_session
from roleplay.sessions.store import SessionMeta, SessionStore

sessions = SessionStore()
limiter = ConcurrentUserLimiter()


def ensure_session_owner(meta: SessionMeta | None, user: User) -> None:
    """With sign-in on, another user's session does not exist for the caller."""
    if meta and user.authenticated and meta.owner not in (None, user.id):
        raise NotFound("no such session", code="session_not_found")


async def own_session(session_id: str, user: User) -> tuple[str, SessionMeta]:
    """The session store's id of the caller's session `session_id`, and its metadata."""
    scoped, meta = await owned_session(user, session_id, sessions)
    if meta is None:
        raise NotFound("no such session", code="session_not_found")
    ensure_session_owner(meta, user)
    return scoped.key, meta


async def session_view(session_id: str, user: User) -> SessionView:
    key, meta = await own_session(session_id, user)
    messages = await sessions.transcript(key)
    settings = get_settings()
    after = messages[meta.summary_upto + 1:]
    context = ContextManager(settings)
    return SessionView(
        session_id=session_id, character_id=meta.character_id, created_at=meta.created_at,
        user_turns=meta.user_turns, message_count=len(messages),
        messages=[{**m.model_dump(exclude_defaults=True, exclude={"key"}),
                   "id": m.id or f"legacy-{n}"} for n, m in enumerate(messages)],
        summary=meta.summary, summary_upto=meta.summary_upto, summary_at=meta.summary_at,
        summary_error=meta.summary_error, pins=meta.pins,
        tokens=SessionTokens(
            transcript=context.window_tokens(messages), summary=meta.summary_tokens,
            after_watermark=context.window_tokens(after),
            ratio=await token_ratio(settings.default_model),
            max_context=await context_budget(settings.default_model, settings)),
        lorebook=await load_fired(key), episodes=meta.episodes, memories_recalled=meta.recalled,
    )


async def end_session(session_id: str, user: User) -> SessionEnded:
    key, _ = await own_session(session_id, user)
    ended = await sessions.delete(key)
    await conversation_archive.forget(user.id, session_id, key)
    await limiter.release(user)
    return SessionEnded(session_id=session_id, ended=ended)


async def release_slot(user: User, session_id: str | None = None) -> SlotReleased:
    """Frees the caller's place under the concurrent-user cap at once (logging out, leaving
    the chat). A place is the user's (an anonymous client's), not a session's: `session_id`
    is accepted and ignored."""
    return SlotReleased(released=await limiter.release(user))

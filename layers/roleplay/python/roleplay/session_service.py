"""What the session endpoints do: show a conversation, end it, free a user's place."""

from __future__ import annotations

from roleplay.chat_models import SessionEnded, SessionTokens, SessionView, SlotReleased
from roleplay.concurrent_user_limiter import ConcurrentUserLimiter, occupant_id
from roleplay.context_manager import ContextManager
from roleplay.errors import BadRequest, NotFound
from roleplay.identity import User
from roleplay.session_store import SessionMeta, SessionStore
from roleplay.settings import get_settings
from roleplay.token_ratio import token_ratio

sessions = SessionStore()
limiter = ConcurrentUserLimiter()


def ensure_session_owner(meta: SessionMeta | None, user: User) -> None:
    """With sign-in on, another user's session does not exist for the caller."""
    if meta and user.authenticated and meta.owner not in (None, user.id):
        raise NotFound("no such session", code="session_not_found")


async def _own_session(session_id: str, user: User) -> SessionMeta:
    meta = await sessions.load_meta(session_id)
    if meta is None:
        raise NotFound("no such session", code="session_not_found")
    ensure_session_owner(meta, user)
    return meta


async def session_view(session_id: str, user: User) -> SessionView:
    meta = await _own_session(session_id, user)
    messages = await sessions.transcript(session_id)
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
            max_context=settings.max_context_tokens),
    )


async def end_session(session_id: str, user: User) -> SessionEnded:
    await _own_session(session_id, user)
    ended = await sessions.delete(session_id)
    await limiter.release(occupant_id(user, session_id))
    return SessionEnded(session_id=session_id, ended=ended)


async def release_slot(user: User, session_id: str | None) -> SlotReleased:
    """Frees the caller's place under the concurrent-user cap at once (logging out, leaving
    the chat); anonymous callers name the session that holds their place."""
    if not user.authenticated and session_id is None:
        raise BadRequest("session_id is needed to release an anonymous session's place",
                         code="session_id_required")
    occupant = occupant_id(user, session_id or "")
    return SlotReleased(released=await limiter.release(occupant))

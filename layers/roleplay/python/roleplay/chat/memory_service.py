"""What the memory endpoints do: list a conversation's episodes, forget one."""

from __future__ import annotations

from roleplay.chat.models import MemoriesView, MemoryForgotten, MemoryView
from roleplay.chat.session_service import own_session
from roleplay.core.errors import NotFound
from roleplay.core.identity import User
from roleplay.sessions.episode_store import EpisodeStore

episodes = EpisodeStore()


async def list_memories(session_id: str, user: User) -> MemoriesView:
    key, meta = await own_session(session_id, user)
    return MemoriesView(session_id=session_id, recalled=meta.recalled, episodes=[
        MemoryView(id=s.episode.id, first=s.episode.first, last=s.episode.last,
                   text=s.episode.text, tokens=s.episode.tokens, created_at=s.episode.at,
                   last_recalled_at=s.recalled_at, embedded=s.vector is not None)
        for s in await episodes.read_all(key)])


async def forget_memory(session_id: str, episode_id: str, user: User) -> MemoryForgotten:
    """The episode is gone from the prompt from the next turn on. A later rebuild of its
    span (an edit below the summary's watermark) remembers it anew."""
    key, _ = await own_session(session_id, user)
    if not await episodes.delete(key, episode_id):
        raise NotFound("no such memory in this session", code="memory_not_found")
    return MemoryForgotten(session_id=session_id, id=episode_id, forgotten=True)

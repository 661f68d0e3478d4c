"""A session's episodes: the turns that left its window, kept to be recalled by relevance.

They live in one hash in the session's slot (`redis_keys().session_episodes`), with the
session's TTL: the field `e<first>-<last>` (the span of transcript indices it covers)
holds the episode as JSON, `v:<id>` its embedding when one was made, `r:<id>` when a
prompt last recalled it. The session's meta hash counts them (`episodes`) and moves a
revision on (`memory_rev`) whenever they change, so a process can keep its ranked copy
until the revision it reads with every turn's window says otherwise.

They are written where the transcript changes, in the same script: a summary pass
stores the episodes of what it folded (`SessionStore.save_summary`), an edit or a
rewind drops the ones that reach the changed message (`REWIND_LUA`). Here are the
reads, the user's delete, and the vectors the background adds.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys

_COUNT = """
local function count_episodes()
  local count = 0
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.match(field, '^e%d+-%d+') then count = count + 1 end
  end
  redis.call('HSET', KEYS[1], 'episodes', count)
  redis.call('HINCRBY', KEYS[1], 'memory_rev', 1)
end
"""

# KEYS: meta hash, episodes. ARGV: episode id. Answers 1, or 0 when there was none.
_DELETE_SCRIPT = LuaScript(_COUNT + """
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], 'v:' .. ARGV[1], 'r:' .. ARGV[1])
count_episodes()
return 1
""")

# KEYS: meta hash, episodes. ARGV: pairs of (episode as embedded, its vector). A vector is
# kept only if its episode is still there unchanged (a rebuild made since is embedded by
# a later job). Answers how many were kept.
_VECTORS_SCRIPT = LuaScript("""
local kept = 0
for i = 1, #ARGV, 2 do
  local id = cjson.decode(ARGV[i]).id
  if redis.call('HGET', KEYS[2], id) == ARGV[i] then
    redis.call('HSET', KEYS[2], 'v:' .. id, ARGV[i + 1])
    kept = kept + 1
  end
end
if kept > 0 then redis.call('HINCRBY', KEYS[1], 'memory_rev', 1) end
return kept
""")


class Episode(BaseModel):
    """A short span of turns as it was when it left the window."""

    id: str
    first: int
    """The transcript index of its first message."""
    last: int
    text: str
    """Its messages, one line each, as `Speaker: words`."""
    tokens: int
    """Its prompt cost, counted once when it was made."""
    terms: list[str] = []
    """Its words as the lexical ranker indexes them, made once in the background."""
    at: float = 0
    """When it was made."""

    @staticmethod
    def id_for(first: int, last: int, part: int = 0) -> str:
        """`e<first>-<last>`, and `.<part>` for the second and later pieces of a message
        too long for one episode: the span is what edits and rewinds are checked against."""
        return f"e{first}-{last}" + (f".{part}" if part else "")


@dataclass(frozen=True)
class StoredEpisode:
    episode: Episode
    raw: str
    """As stored: what a vector is fenced on."""
    vector: tuple[float, ...] | None = None
    recalled_at: float | None = None


def encode_vector(vector: Sequence[float]) -> str:
    """Little-endian float32, base64: a quarter of JSON's size, and no numpy needed."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def decode_vector(text: str) -> tuple[float, ...]:
    raw = base64.b64decode(text)
    return struct.unpack(f"<{len(raw) // 4}f", raw)


class EpisodeStore:
    def _keys(self, session_id: str) -> list[str]:
        keys = redis_keys()
        return [keys.session(session_id), keys.session_episodes(session_id)]

    async def read_all(self, session_id: str) -> list[StoredEpisode]:
        """Every episode, oldest first, with its vector and last recall; one round trip."""
        found = await (await get_redis()).hgetall(self._keys(session_id)[1])
        fields = {str(k): str(v) for k, v in found.items()}
        episodes = []
        for field, raw in fields.items():
            if field.startswith(("v:", "r:")):
                continue
            vector = fields.get("v:" + field)
            recalled = fields.get("r:" + field)
            episodes.append(StoredEpisode(
                Episode.model_validate_json(raw), raw,
                decode_vector(vector) if vector else None,
                float(recalled) if recalled else None))
        episodes.sort(key=lambda stored: stored.episode.first)
        return episodes

    async def delete(self, session_id: str, episode_id: str) -> bool:
        """Forgets one episode; False if there was none by that id."""
        return bool(await _DELETE_SCRIPT(self._keys(session_id), [episode_id]))

    async def save_vectors(self, session_id: str,
                           vectors: Sequence[tuple[StoredEpisode, Sequence[float]]]) -> int:
        """Stores embeddings made in the background, each only if its episode is unchanged."""
        if not vectors:
            return 0
        args: list[str] = []
        for stored, vector in vectors:
            args += [stored.raw, encode_vector(vector)]
        return int(await _VECTORS_SCRIPT(self._keys(session_id), args))

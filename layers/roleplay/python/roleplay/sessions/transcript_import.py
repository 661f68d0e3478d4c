"""A whole transcript written as a new session in one step (an imported chat file).

One Lua script over the session's five keys (`SessionStore.keys`: one hash tag, so one
slot on a Redis Cluster) refuses when any of them exists, so an import never overwrites
a session, nor lands beside a turn or a summary of one; else it writes the transcript,
the message id index and the metadata that a turn's begin leaves for a new session
(owner, character, persona, scenario, `created_at`, a random epoch, `user_turns`), all
with the session's TTL. The summary fields stay unset: the usual summary job fills them
when a later turn finds one due.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from roleplay.core.lua_script import LuaScript
from roleplay.core.settings import get_settings
from roleplay.sessions.store import SessionStore, StoredMessage, TurnSetup, now

CHUNK = 1000
"""Messages per RPUSH/HSET inside the script: `unpack` is bounded by Lua's C stack
(LUAI_MAXCSTACK, 8,000 slots), so a 20,000-message transcript goes in chunks."""

# KEYS: messages list, meta hash, summary lock, turn lease, id hash.
# ARGV: 1 ttl s, 2 now s, 3 epoch, 4 setup JSON (TurnSetup.encoded), 5 user turns,
# 6 chunk size, 7... each message as its id then its stored JSON.
# Answers the number of messages written, or -1 when the session already exists.
_IMPORT_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]) > 0 then return -1 end
local setup = cjson.decode(ARGV[4])
redis.call('HSET', KEYS[2], 'owner', setup.owner, 'character_id', setup.character_id,
           'persona', setup.persona, 'scenario', setup.scenario, 'created_at', ARGV[2],
           'epoch', ARGV[3], 'user_turns', ARGV[5])
local chunk = tonumber(ARGV[6])
local base = 6
local n = (#ARGV - base) / 2
local done = 0
while done < n do
  local last = math.min(done + chunk, n)
  local values, index = {}, {}
  for i = done + 1, last do
    index[#index + 1] = ARGV[base + 2 * i - 1]
    index[#index + 1] = i - 1
    values[#values + 1] = ARGV[base + 2 * i]
  end
  redis.call('RPUSH', KEYS[1], unpack(values))
  redis.call('HSET', KEYS[5], unpack(index))
  done = last
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[1])
return n
""")


async def import_transcript(session_id: str, messages: Sequence[StoredMessage], *,
                            setup: TurnSetup, store: SessionStore | None = None) -> bool:
    """Stores `messages` (each with its own id) as the new session `session_id` (its
    storage id); one round trip. False: a session is already stored there, left as it was."""
    user_turns = sum(1 for message in messages if message.role == "user")
    args: list[object] = [
        get_settings().conversation_ttl_s, now(), secrets.randbelow(2**40) * 1000, setup.encoded(),
        user_turns, CHUNK]
    for message in messages:
        args += [message.id, message.model_dump_json(exclude_defaults=True)]
    written = await _IMPORT_SCRIPT((store or SessionStore()).keys(session_id), args)
    return int(written) >= 0

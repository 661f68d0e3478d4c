"""Changes to a stored transcript, in Lua on the session store's keys and rules.

Every change is refused while a turn holds the session's lease (`busy`), so it waits
for that turn like a turn does (`session_wait`). A change moves the epoch on (a reply
or a summary prepared against the old text is dropped), and one that touches a
message at or below the summary's watermark clears the summary: the next turn
rebuilds it from what remains. Removing messages keeps `user_turns` exact and the id
-> index hash in step.

Generating actions (regenerate, continue) take the lease themselves (`begin`) and
store their reply with `replace` under it, which releases it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.settings import get_settings
from roleplay.sessions.store import (
    RECORD_RECALL_LUA,
    REWIND_LUA,
    WINDOW_CAP,
    WINDOW_LUA,
    Busy,
    SessionStore,
    StoredMessage,
    Turn,
    Window,
    now,
    window_from_answer,
)

# The summary is cleared when index `at` lies at or below its watermark, and the episodes
# that reach `at` go (`drop_episodes_from`, from REWIND_LUA): the next summary passes
# make them again from the text as it is now.
_INVALIDATE = """
local function invalidate(at)
  if at <= tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1') then
    redis.call('HSET', KEYS[2], 'summary', '', 'summary_upto', -1, 'summary_tokens', 0,
               'summary_at', '')
  end
  drop_episodes_from(at)
end
"""

# KEYS: messages, meta, summary lock, lease, ids. ARGV: token, lease ms, window cap.
# Takes the lease; answers {'gone'} | {'busy', ms left} | {'begin', <window>}.
_BEGIN_SCRIPT = LuaScript(WINDOW_LUA + """
if redis.call('EXISTS', KEYS[2]) == 0 then return {'gone'} end
local lease = redis.call('GET', KEYS[4])
if lease and lease ~= ARGV[1] then return {'busy', redis.call('PTTL', KEYS[4])} end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
return window_answer({'begin'}, tonumber(ARGV[3]))
""")

# KEYS: messages, meta, summary lock, lease, ids, episodes. ARGV: 1 lease token ('' : none
# may be held), 2 epoch ('' : any), 3 index, 4 message there now ('' : append at index),
# 5 new message, 6 its id, 7 ttl s, 8 the episodes the reply's prompt recalled (JSON list;
# '' : not a generated reply), 9 now. Compare-and-set of one message; moves the epoch on,
# clears a summary covering it, releases the lease it was given. Answers 1, 0 (the
# message or the session changed: nothing stored) or {'busy', ms left}.
_REPLACE_SCRIPT = LuaScript(REWIND_LUA + _INVALIDATE + RECORD_RECALL_LUA + """
local lease = redis.call('GET', KEYS[4])
if ARGV[1] == '' and lease then return {'busy', redis.call('PTTL', KEYS[4])} end
if ARGV[1] ~= '' and lease ~= ARGV[1] then return 0 end
if ARGV[1] ~= '' then redis.call('DEL', KEYS[4]) end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return 0 end
local at = tonumber(ARGV[3])
if ARGV[4] == '' then
  if redis.call('LLEN', KEYS[1]) ~= at then return 0 end
  redis.call('RPUSH', KEYS[1], ARGV[5])
else
  if redis.call('LINDEX', KEYS[1], at) ~= ARGV[4] then return 0 end
  redis.call('LSET', KEYS[1], at, ARGV[5])
end
redis.call('HSET', KEYS[5], ARGV[6], at)
redis.call('HINCRBY', KEYS[2], 'epoch', 1)
invalidate(at)
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[5]}) do redis.call('EXPIRE', key, ARGV[7]) end
if ARGV[8] ~= '' then record_recall(ARGV[8], ARGV[9], ARGV[7]) end
return 1
""")

# KEYS: messages, meta, summary lock, lease, ids, episodes. ARGV: message id, and after (0/1).
# Answers {'deleted', how many} | {'missing'} | {'busy', ms left}.
_DELETE_SCRIPT = LuaScript(REWIND_LUA + _INVALIDATE + """
if redis.call('EXISTS', KEYS[4]) == 1 then return {'busy', redis.call('PTTL', KEYS[4])} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
local at = redis.call('HGET', KEYS[5], ARGV[1])
if not at then return {'missing'} end
at = tonumber(at)
if ARGV[2] == '1' then return {'deleted', rewind(at)} end
local gone = cjson.decode(redis.call('LINDEX', KEYS[1], at))
local mark = '\\0deleted:' .. ARGV[1]
redis.call('LSET', KEYS[1], at, mark)
redis.call('LREM', KEYS[1], 1, mark)
redis.call('HDEL', KEYS[5], ARGV[1])
for k, raw in ipairs(redis.call('LRANGE', KEYS[1], at, -1)) do
  local id = cjson.decode(raw).id
  if id then redis.call('HSET', KEYS[5], id, at + k - 1) end
end
if gone.role == 'user' then redis.call('HINCRBY', KEYS[2], 'user_turns', -1) end
redis.call('HINCRBY', KEYS[2], 'epoch', 1)
invalidate(at)
return {'deleted', 1}
""")

# KEYS: messages, meta, summary lock, lease, ids. ARGV: summary, tokens, timestamp.
# Replaces the summary's text, keeping its watermark; moves the epoch on so a summary
# being made from the old one is dropped. Answers 1 | 0 (no session) | {'busy', ms}.
_PUT_SUMMARY_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[4]) == 1 then return {'busy', redis.call('PTTL', KEYS[4])} end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'summary', ARGV[1], 'summary_tokens', ARGV[2], 'summary_at', ARGV[3],
           'summary_error', '', 'summary_failed_at', '')
redis.call('HINCRBY', KEYS[2], 'epoch', 1)
return 1
""")


@dataclass(frozen=True)
class Located:
    """A message found by its id, with its raw stored form (for compare-and-set)."""

    index: int
    raw: str
    message: StoredMessage


@dataclass(frozen=True)
class Began:
    """An action holding the lease: the window it read, with each message's raw form."""

    window: Window
    raws: list[str]


class TranscriptEdits:
    def __init__(self, sessions: SessionStore | None = None) -> None:
        self.sessions = sessions or SessionStore()

    def _keys(self, session_id: str) -> list[str]:
        return self.sessions.keys(session_id)

    async def locate(self, session_id: str, message_id: str) -> Located | None:
        keys = self._keys(session_id)
        redis = await get_redis()
        at = await redis.hget(keys[4], message_id)
        if at is None:
            return None
        raw = await redis.lindex(keys[0], int(at))
        if raw is None:
            return None
        message = StoredMessage.model_validate_json(raw)
        return Located(int(at), str(raw), message) if message.id == message_id else None

    async def begin(self, session_id: str, token: str) -> Began | Busy | None:
        """Takes the session's lease and reads its window; None if there is no session."""
        settings = get_settings()
        answer = await _BEGIN_SCRIPT(self._keys(session_id),
                                     [token, settings.turn_lease_s * 1000, WINDOW_CAP])
        if answer[0] == "gone":
            return None
        if answer[0] == "busy":
            return Busy(max(0, int(answer[1])))
        window = window_from_answer(answer[1:])
        return Began(window, [str(item) for item in answer[8:]])

    async def replace(self, session_id: str, index: int, old_raw: str | None,
                      message: StoredMessage, *, token: str = "", epoch: int | None = None,
                      recalled: Sequence[str] | None = None) -> bool | Busy:
        """Compare-and-set of the message at `index` (`old_raw` None: append there).
        `recalled`: for a generated reply, the episodes its prompt brought back."""
        answer = await _REPLACE_SCRIPT(self._keys(session_id), [
            token, "" if epoch is None else str(epoch), index, old_raw or "",
            message.model_dump_json(exclude_defaults=True), message.id,
            get_settings().conversation_ttl_s, "" if recalled is None else json.dumps(list(recalled)),
            now()])
        if isinstance(answer, list):
            return Busy(max(0, int(answer[1])))
        return bool(answer)

    async def delete(self, session_id: str, message_id: str, *, and_after: bool) -> int | Busy | None:
        """How many messages went; None if there is no such message."""
        answer = await _DELETE_SCRIPT(self._keys(session_id), [message_id, int(and_after)])
        if answer[0] == "busy":
            return Busy(max(0, int(answer[1])))
        return None if answer[0] == "missing" else int(answer[1])

    async def put_summary(self, session_id: str, text: str, tokens: int, at: float) -> bool | Busy:
        answer = await _PUT_SUMMARY_SCRIPT(self._keys(session_id), [text, tokens, at])
        if isinstance(answer, list):
            return Busy(max(0, int(answer[1])))
        return bool(answer)

    async def end(self, session_id: str, token: str) -> None:
        """Releases a lease taken by `begin` when the action stores nothing."""
        await self.sessions.end_turn(Turn(session_id=session_id, token=token,
                                          window=_EMPTY, kept=0, appended=0))


_EMPTY = Window(length=0, watermark=-1, first_index=0, summary=None, summarizing=False,
                messages=[])

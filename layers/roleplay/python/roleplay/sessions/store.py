"""Conversation sessions in Redis: the server's transcript is the source of truth.

Every stored message has an id (`StoredMessage.id`), kept in an id -> index hash so a
client's re-sent history can be matched by id. A turn runs under a lease (one turn at
a time per session, across processes and instances): `begin_turn` is one Lua script
that checks and takes the lease, recognises a retry of a turn already answered,
aligns the client's history with the stored one (rewinding where the client's view
diverges), enforces `MAX_TURNS`, appends and reads the window, in one round trip.
`append_reply` stores the reply only behind its fence (the session's epoch and the
transcript's length when the turn began) and releases the lease, so a reply never
lands after another turn's message or in a session deleted meanwhile.

The epoch starts at a random number when a session is created and grows on every
rewind: a summary or a reply prepared against messages that a rewind removed, or
against an earlier session under the same id, is dropped.

A rolling summary covers the transcript up to a watermark (the index of the last
message it covers). A turn reads only what lies after the watermark, so turn 1,000
costs what turn 10 does; the full transcript is read only when a client asks for it.
A rewind below the watermark clears the summary; the next one is built from what remains.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from roleplay.core.lua_script import LuaScript
from roleplay.core.pipelined_reads import Command, pipelined_reads
from roleplay.core.redis_client import get_redis, read_strings
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.sessions.known_windows import KnownWindow, known_windows

Role = Literal["user", "assistant", "system"]
Swipes = Literal["never", "history", "any"]
"""When a re-sent history already answered asks for a new version: never (a retry);
`history`, when it re-sends more than the one new message (`/api/chat`, where clients
send only the new one, so a lone message is a retry within `TURN_RETRY_WINDOW_S`);
`any` (`/v1`, whose clients always re-send the whole conversation)."""
_SWIPES: dict[Swipes, str] = {"never": "0", "history": "1", "any": "2"}

WINDOW_CAP = 256
"""At most this many messages after the watermark are read per turn. More only piles
up while summaries fail, and then the oldest would be dropped from the prompt anyway."""

# Lua, with KEYS[1] the messages list, KEYS[2] the meta hash, KEYS[3] the summary lock:
# appends {length, watermark, first index read, summary, summarizing now (0/1), epoch,
# memory revision, index of the first message sent, messages after the watermark
# (capped) from that index...} to `head`; summary and watermark are read together, so
# they match. `known` ('' or nil: none) is what the caller already holds of the window
# (`known_windows.KnownWindow.hint`: epoch, start, end, id of its last message): when it
# still holds (same epoch, the same message at its end), only what follows it is sent.
_WINDOW = """
local function window_answer(answer, cap, known)
  local length = redis.call('LLEN', KEYS[1])
  local watermark = tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1')
  local first = math.max(watermark + 1, length - cap)
  local epoch = redis.call('HGET', KEYS[2], 'epoch') or '0'
  answer[#answer + 1] = length
  answer[#answer + 1] = watermark
  answer[#answer + 1] = first
  answer[#answer + 1] = redis.call('HGET', KEYS[2], 'summary') or ''
  answer[#answer + 1] = redis.call('EXISTS', KEYS[3])
  answer[#answer + 1] = epoch
  answer[#answer + 1] = redis.call('HGET', KEYS[2], 'memory_rev') or '0'
  local from = first
  if known and known ~= '' then
    local kepoch, kstart, kend, kid = string.match(known, '^(%d+) (%d+) (%d+) (.+)$')
    kstart, kend = tonumber(kstart), tonumber(kend)
    if kepoch == epoch and kstart and kstart <= first and first < kend and kend <= length then
      local last = redis.call('LINDEX', KEYS[1], kend - 1)
      if last and cjson.decode(last).id == kid then from = kend end
    end
  end
  answer[#answer + 1] = from
  if from < length then
    for _, raw in ipairs(redis.call('LRANGE', KEYS[1], from, -1)) do answer[#answer + 1] = raw end
  end
  return answer
end
"""

# Lua, with KEYS[2] the meta hash and KEYS[6] the episodes hash (`episode_store`): drops
# the episodes that reach index `at` or beyond (their messages changed or went), with
# their vectors and recall times; counts what is left and moves the memory revision on.
# An episode's field is its id, `e<first>-<last>`, so no episode needs decoding.
_DROP_EPISODES = """
local function episode_span(field)
  local first, last = string.match(field, "^e(%d+)-(%d+)")
  if first then return tonumber(first), tonumber(last) end
  return nil
end
local function count_episodes()
  local count = 0
  for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
    if episode_span(field) then count = count + 1 end
  end
  redis.call('HSET', KEYS[2], 'episodes', count)
  redis.call('HINCRBY', KEYS[2], 'memory_rev', 1)
  return count
end
local function drop_episodes_from(at)
  local dropped = 0
  for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
    local first, last = episode_span(field)
    if first and last >= at then
      redis.call('HDEL', KEYS[6], field, 'v:' .. field, 'r:' .. field)
      dropped = dropped + 1
    end
  end
  if dropped > 0 then count_episodes() end
  return dropped
end
"""

# Lua, with KEYS[1] the messages list, KEYS[2] the meta hash, KEYS[5] the id hash,
# KEYS[6] the episodes hash:
# keeps the first `keep` messages and removes the rest (their ids, their user turns),
# moves the epoch on, and clears a summary that covered any removed message.
_REWIND = """
local function rewind(keep)
  local length = redis.call('LLEN', KEYS[1])
  if keep >= length then return 0 end
  local users, ids = 0, {}
  for _, raw in ipairs(redis.call('LRANGE', KEYS[1], keep, -1)) do
    local m = cjson.decode(raw)
    if m.role == 'user' then users = users + 1 end
    if m.id then ids[#ids + 1] = m.id end
  end
  if keep == 0 then redis.call('DEL', KEYS[1]) else redis.call('LTRIM', KEYS[1], 0, keep - 1) end
  for _, id in ipairs(ids) do redis.call('HDEL', KEYS[5], id) end
  if users > 0 then redis.call('HINCRBY', KEYS[2], 'user_turns', -users) end
  redis.call('HINCRBY', KEYS[2], 'epoch', 1)
  if keep <= tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1') then
    redis.call('HSET', KEYS[2], 'summary', '', 'summary_upto', -1, 'summary_tokens', 0,
               'summary_at', '')
  end
  drop_episodes_from(keep)
  return length - keep
end
"""

GUARDED_FIELDS = ("owner", "character_id", "persona", "scenario", "summary", "pins",
                  "summary_failed_at")
"""The session's fields a turn's checks and prompt read from its lookup (`chat.preparation`):
a turn that begins on a copy of them (`known_lookups`) begins only while they still hold."""

# Lua, with KEYS[2] the meta hash and KEYS[8...] the string keys the lookup also read:
# `lookup_guard` of them as they are now.
_GUARD = """
local function guard_digest()
  local parts = redis.call('HMGET', KEYS[2], """ + ", ".join(f"'{name}'" for name in GUARDED_FIELDS) + """)
  for i = 8, #KEYS do parts[#parts + 1] = redis.call('GET', KEYS[i]) end
  for i, v in ipairs(parts) do parts[i] = v and (#v .. ':' .. v) or '-' end
  return redis.sha1hex(table.concat(parts, '\\0'))
end
"""


def lookup_guard(fields: Mapping[str, str], values: Sequence[str | None]) -> str:
    """A digest of a session's `GUARDED_FIELDS` (its hash as read) and the string values a
    lookup read beside it, as `_GUARD`'s `guard_digest` makes it in the begin script."""
    def part(value: str | None) -> bytes:
        if value is None:
            return b"-"
        raw = value.encode()
        return b"%d:%s" % (len(raw), raw)

    parts = [part(fields.get(name)) for name in GUARDED_FIELDS] + [part(value) for value in values]
    return hashlib.sha1(b"\0".join(parts), usedforsecurity=False).hexdigest()


# KEYS: messages list, meta hash, summary lock, turn lease, id hash, episodes, cold marker.
# ARGV: 1 ttl s, 2 now s, 3 window cap, 4 lease token, 5 lease ms, 6 max turns (0: none),
# 7 retry window s, 8 idempotency key ('' none), 9 incoming JSON [{r role, c normalized
# content, i client id?, m new id}], 10 setup JSON (a leading '=': unchanged, written only
# if the session is new or was deleted meanwhile), 11 epoch for a new
# session, 12 swipes ('0' never, '1' a re-sent history of two or more messages, '2' any
# re-sent history), 13 the window already known ('' none), 14... each incoming message as
# it would be stored, then (optional) the lookup's guard: `lookup_guard` of what the turn
# read without reading it again, whose keys (the persona's, the character's) follow the
# seven above in KEYS. One Redis server only: on a cluster those keys lie on other shards.
# Answers {'stale'} (the guard no longer holds; nothing written) | {'busy', lease ms left} |
# {'cold'} (the conversation is in the cold store: bring it back, then begin) |
# {'turn_limit', user turns} | {'retry', user message, reply} |
# {'swipe', user message, reply} | {'begin', stored kept, appended, <window>}.
_BEGIN_SCRIPT = LuaScript(_WINDOW + _DROP_EPISODES + _REWIND + _GUARD + """
local incoming = cjson.decode(ARGV[9])
local n = #incoming
if ARGV[14 + n] and guard_digest() ~= ARGV[14 + n] then return {'stale'} end
local lease = redis.call('GET', KEYS[4])
if lease and lease ~= ARGV[4] then return {'busy', redis.call('PTTL', KEYS[4])} end
if redis.call('EXISTS', KEYS[7]) == 1 and redis.call('EXISTS', KEYS[2]) == 0 then return {'cold'} end
local length = redis.call('LLEN', KEYS[1])
local key = ARGV[8]

local function norm(s)
  s = string.gsub(s, '%s+', ' ')
  s = string.gsub(s, '^ ', '')
  s = string.gsub(s, ' $', '')
  return s
end
for _, x in ipairs(incoming) do
  if x.i then
    local at = redis.call('HGET', KEYS[5], x.i)
    if at then x.idx = tonumber(at) end
  end
end
-- a re-sent history already answered asks for another version of the reply (a swipe)
-- when swipes are on for it and the reply was whole (one cut short is a retry's)
local function swipes(count, reply)
  local mode = ARGV[12]
  if mode == '0' or (mode == '1' and count < 2) then return false end
  return not cjson.decode(reply).cut
end
-- a stored reply matches the client's message when any of its versions does: the client
-- picked that version (a SillyTavern swipe) and went on; `x.pick` says which
local function same(s, at, x)
  if x.idx and x.idx ~= at then return false end
  if s.role ~= x.r then return false end
  if s.n == nil then s.n = norm(s.content) end
  if s.n == x.c then return true end
  if s.role == 'assistant' and type(s.alternatives) == 'table' then
    for k, text in ipairs(s.alternatives) do
      if norm(text) == x.c then x.pick = k - 1 return true end
    end
  end
  return false
end

local a = nil
local answer_tail = false
local chosen = {}  -- {index, incoming j, stored message} of versions the client picked
if key ~= '' and length > 0 then
  local from = math.max(0, length - 64)  -- how far back a retry's key is looked for
  local recent = redis.call('LRANGE', KEYS[1], from, -1)
  for k = #recent, 1, -1 do
    if string.find(recent[k], key, 1, true) and cjson.decode(recent[k]).key == key then
      if recent[k + 1] and cjson.decode(recent[k + 1]).role == 'assistant' then
        return {'retry', recent[k], recent[k + 1]}
      end
      if k == #recent then answer_tail = true end
      break
    end
  end
end

local matched = 0
if answer_tail then
  a, matched = length - n, n
else
  for j, x in ipairs(incoming) do
    if x.idx then a = x.idx - (j - 1) break end
  end
  if a ~= nil and a < 0 then a = nil end
  local t = math.min(length, n + 1)
  if a == nil and n > 0 and t > 0 then
    local raw = redis.call('LRANGE', KEYS[1], length - t, -1)
    local tail = {}
    for i, r in ipairs(raw) do tail[i] = cjson.decode(r) end
    for k = math.min(n, length), 1, -1 do
      local ok = true
      for j = 1, k do
        if not same(tail[t - k + j], length - k + j - 1, incoming[j]) then ok = false break end
      end
      if ok then a = length - k break end
    end
    if a == nil and key == '' and t == n + 1 and incoming[n].r == 'user'
        and tail[t].role == 'assistant' then
      local ok = true
      for j = 1, n do
        if not same(tail[j], length - n - 1 + j - 1, incoming[j]) then ok = false break end
      end
      if ok and swipes(n, raw[t]) then return {'swipe', raw[n], raw[t]} end
      if ok and (n > 1 or tonumber(tail[n].at or 0) >= tonumber(ARGV[2]) - tonumber(ARGV[7])) then
        return {'retry', raw[n], raw[t]}
      end
    end
    if a == nil and n >= 2 then
      -- a whole conversation re-sent: it starts at the first message, or right after a
      -- stored opening line that the client does not hold
      local opening = redis.call('LRANGE', KEYS[1], 0, 1)
      for i, r in ipairs(opening) do
        local s = cjson.decode(r)
        if same(s, i - 1, incoming[1]) then a = i - 1 break end
        if s.role ~= 'assistant' then break end
      end
    end
  end
  if a == nil then a = length end
  if a < length and n > 0 then
    for j, r in ipairs(redis.call('LRANGE', KEYS[1], a, a + n - 1)) do
      local s = cjson.decode(r)
      incoming[j].pick = nil
      if not same(s, a + j - 1, incoming[j]) then break end
      matched = j
      if incoming[j].pick then chosen[#chosen + 1] = {a + j - 1, j, s} end
    end
  end
end
local keep = a + matched
if matched == n and n > 0 and keep == length - 1 and incoming[n].r == 'user' then
  local after = redis.call('LINDEX', KEYS[1], keep)
  if cjson.decode(after).role == 'assistant' then
    local kind = swipes(n, after) and 'swipe' or 'retry'
    return {kind, redis.call('LINDEX', KEYS[1], keep - 1), after}
  end
end

local adding = 0
for j = matched + 1, n do
  if incoming[j].r == 'user' then adding = adding + 1 end
end
local max_turns = tonumber(ARGV[6])
if max_turns > 0 and adding > 0 then
  local users = tonumber(redis.call('HGET', KEYS[2], 'user_turns') or '0')
  if keep < length then
    for _, r in ipairs(redis.call('LRANGE', KEYS[1], keep, -1)) do
      if cjson.decode(r).role == 'user' then users = users - 1 end
    end
  end
  if users + adding > max_turns then return {'turn_limit', users} end
end

local unchanged = string.sub(ARGV[10], 1, 1) == '='
if not unchanged or redis.call('EXISTS', KEYS[2]) == 0 then
  local setup = cjson.decode(unchanged and string.sub(ARGV[10], 2) or ARGV[10])
  redis.call('HSET', KEYS[2], 'owner', setup.owner, 'character_id', setup.character_id,
             'persona', setup.persona, 'scenario', setup.scenario)
end
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[2])
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[11])
rewind(keep)
for _, c in ipairs(chosen) do
  local at, j, m = c[1], c[2], c[3]
  m.n = nil
  m.selected = incoming[j].pick
  m.content = m.alternatives[m.selected + 1]
  m.tokens = cjson.decode(ARGV[13 + j]).tokens
  m.cut = nil
  redis.call('LSET', KEYS[1], at, cjson.encode(m))
  if at <= tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1') then
    redis.call('HSET', KEYS[2], 'summary', '', 'summary_upto', -1, 'summary_tokens', 0,
               'summary_at', '')
  end
end
if #chosen > 0 then redis.call('HINCRBY', KEYS[2], 'epoch', 1) end
for j = matched + 1, n do
  local at = redis.call('RPUSH', KEYS[1], ARGV[13 + j]) - 1
  redis.call('HSET', KEYS[5], incoming[j].m, at)
end
if adding > 0 then redis.call('HINCRBY', KEYS[2], 'user_turns', adding) end
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[1])
redis.call('EXPIRE', KEYS[6], ARGV[1])
return window_answer({'begin', keep, n - matched}, tonumber(ARGV[3]), ARGV[13])
""")

# KEYS: messages list, meta hash, summary lock. ARGV: window cap, the window already known
# ('' none). Reads, writes nothing.
_READ_WINDOW_SCRIPT = LuaScript(_WINDOW + """
return window_answer({}, tonumber(ARGV[1]), ARGV[2])
""")

# Lua, with KEYS[2] the meta hash and KEYS[6] the episodes hash: notes the episodes a
# turn's prompt recalled (`ids`, a JSON list) in the meta hash (the session view and the
# next `done` event name them) and, per episode still there, when it was last recalled;
# keeps the episodes as long as the session.
_RECORD_RECALL = """
local function record_recall(ids, at, ttl)
  redis.call('HSET', KEYS[2], 'recalled', ids)
  for _, id in ipairs(cjson.decode(ids)) do
    if redis.call('HEXISTS', KEYS[6], id) == 1 then redis.call('HSET', KEYS[6], 'r:' .. id, at) end
  end
  redis.call('EXPIRE', KEYS[6], ttl)
end
"""

# KEYS: messages list, meta hash, turn lease, id hash, episodes. ARGV: lease token, epoch,
# length when the turn began, ttl s, reply id, reply as stored, the ids of the episodes
# the turn's prompt recalled (JSON list), now.
# Stores the reply only if the session still exists under the same epoch and nothing
# was appended since (so it directly follows what it answers), and no other turn holds
# the lease; releases the lease; notes what the turn recalled. Answers the new length,
# or 0 when the reply was dropped.
_REPLY_SCRIPT = LuaScript(_RECORD_RECALL.replace("KEYS[6]", "KEYS[5]") + """
local lease = redis.call('GET', KEYS[3])
if lease and lease ~= ARGV[1] then return 0 end
if lease then redis.call('DEL', KEYS[3]) end
if (redis.call('HGET', KEYS[2], 'epoch') or '') ~= ARGV[2] then return 0 end
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[3]) then return 0 end
local length = redis.call('RPUSH', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[4], ARGV[5], length - 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[4])
record_recall(ARGV[7], ARGV[8], ARGV[4])
return length
""")

# KEYS: turn lease. ARGV: token. Releases the lease only for its holder.
_END_TURN_SCRIPT = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS: turn lease. ARGV: token, lease ms. Extends the lease only for its holder.
_RENEW_TURN_SCRIPT = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")

# KEYS: messages list, meta hash, summary lock, turn lease, id hash, episodes. ARGV: token.
# Removes a session its holder created and failed to answer (the client never learned its id).
_DISCARD_SCRIPT = LuaScript("""
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
""")

# KEYS: messages list, meta hash, summary lock, turn lease, id hash, episodes. ARGV: keep.
# The store's rewind on its own (for edits): refused (-1) while a turn holds the lease.
_REWIND_SCRIPT = LuaScript(_DROP_EPISODES + _REWIND + """
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
return rewind(tonumber(ARGV[1]))
""")

# KEYS: messages list, meta hash, episodes. ARGV: 1 expected watermark, 2 new watermark,
# 3 summary, 4 summary tokens, 5 timestamp, 6 expected epoch, 7 episodes kept at most,
# 8... the episodes the folded messages make (JSON, each with its `id`).
# Replaces the summary only if nobody moved the watermark or rewound the transcript
# meanwhile, and the session still exists; messages after the new watermark are
# untouched, so turns that arrived during summarization are never lost. The folded
# messages' episodes replace any kept from an earlier transcript past the old watermark;
# past the bound, the oldest episodes go first.
_SAVE_SUMMARY_SCRIPT = LuaScript(_DROP_EPISODES.replace("KEYS[6]", "KEYS[3]") + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1')
if current ~= tonumber(ARGV[1]) then return 0 end
if (redis.call('HGET', KEYS[2], 'epoch') or '0') ~= ARGV[6] then return 0 end
if tonumber(ARGV[2]) >= redis.call('LLEN', KEYS[1]) then return 0 end
redis.call('HSET', KEYS[2], 'summary', ARGV[3], 'summary_upto', ARGV[2],
           'summary_tokens', ARGV[4], 'summary_at', ARGV[5], 'summary_error', '',
           'summary_failed_at', '')
if #ARGV > 7 then
  drop_episodes_from(current + 1)
  for i = 8, #ARGV do
    redis.call('HSET', KEYS[3], cjson.decode(ARGV[i]).id, ARGV[i])
  end
  local spans = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
    local first = episode_span(field)
    if first then spans[#spans + 1] = {first, field} end
  end
  table.sort(spans, function(x, y) return x[1] < y[1] end)
  for i = 1, #spans - tonumber(ARGV[7]) do
    local field = spans[i][2]
    redis.call('HDEL', KEYS[3], field, 'v:' .. field, 'r:' .. field)
  end
  count_episodes()
  local ttl = redis.call('TTL', KEYS[2])
  if ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl) end
end
return 1
""")

# KEYS: meta hash. ARGV: error, timestamp. A deleted session stays deleted.
_RECORD_FAILURE_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'summary_error', ARGV[1], 'summary_failed_at', ARGV[2])
return 1
""")

WINDOW_LUA = _WINDOW
"""The store's Lua pieces, for the conversation-control scripts (`roleplay.control`)."""
REWIND_LUA = _DROP_EPISODES + _REWIND
RECORD_RECALL_LUA = _RECORD_RECALL

_SPACE = re.compile(r"[ \t\n\v\f\r]+")


def normalized(content: str) -> str:
    """Content compared with whitespace runs collapsed and the ends trimmed (as the Lua side
    does, ASCII whitespace only, so both agree)."""
    return _SPACE.sub(" ", content).strip(" ")


def new_message_id() -> str:
    return secrets.token_hex(8)


class StoredMessage(BaseModel):
    """Frozen: one parsed message is shared by every turn that reads it (`parse_stored`)."""

    model_config = ConfigDict(frozen=True)

    id: str = ""
    role: Role
    content: str
    at: float
    tokens: int = 0
    cut: bool = False
    greeting: bool = False
    key: str | None = None
    """The `Idempotency-Key` the turn's user message came with."""
    edited: bool = False
    alternatives: list[str] | None = None
    """A regenerated reply's versions (`control.alternatives`); `content` is the selected one."""
    selected: int | None = None


class SessionMeta(BaseModel):
    session_id: str
    owner: str | None = None
    character_id: str | None = None
    persona: str | None = None
    scenario: dict[str, Any] | None = None
    created_at: float | None = None
    user_turns: int = 0
    epoch: int = 0
    summary: str | None = None
    summary_upto: int = -1
    summary_tokens: int = 0
    summary_at: float | None = None
    summary_error: str | None = None
    summary_failed_at: float | None = None
    pins: list[dict[str, str]] = []
    """Facts the user pinned ({id, text}), always in the system prompt (`control.pins`)."""
    episodes: int = 0
    """Episodes kept in memory (`episode_store`)."""
    recalled: list[str] = []
    """The episodes the last turn's prompt recalled."""


class Window(BaseModel):
    """What a turn reads: the transcript after the summary's watermark."""

    length: int
    watermark: int
    first_index: int
    summary: str | None
    summarizing: bool
    """A summary is being made right now (its lock is held): no need to ask for another."""
    epoch: int = 0
    memory_rev: int = 0
    """Moves on whenever the session's episodes change: a process's ranked copy of them
    (`memory.recall`) stays good while it holds."""
    messages: list[StoredMessage]

    @property
    def unread(self) -> int:
        """Messages after the watermark that the cap left out of `messages`."""
        return self.first_index - (self.watermark + 1)

    @property
    def tail(self) -> StoredMessage | None:
        return self.messages[-1] if self.messages and self.first_index < self.length else None


@dataclass(frozen=True)
class TurnSetup:
    """Who the session talks to: written by the turn's begin when it changed, or when the
    session is new (or was deleted while the turn waited)."""

    owner: str
    character_id: str | None
    persona: str | None
    scenario: dict[str, Any] | None

    def encoded(self) -> str:
        return json.dumps({"owner": self.owner, "character_id": self.character_id or "",
                           "persona": self.persona or "",
                           "scenario": json.dumps(self.scenario, ensure_ascii=False)
                           if self.scenario else ""}, ensure_ascii=False)


@dataclass(frozen=True)
class Turn:
    """A turn that holds its session's lease: the window it read and its reply's fence."""

    session_id: str
    token: str
    window: Window
    kept: int
    """Stored messages the client's history agreed with (the rest were rewound)."""
    appended: int

    @property
    def user_message(self) -> StoredMessage | None:
        tail = self.window.tail
        return tail if tail is not None and tail.role == "user" else None


@dataclass(frozen=True)
class Replay:
    """A re-send of a turn already answered: its stored message and reply. A retry gets
    that reply; a swipe (`swipe`) asks for another version of it."""

    user_message: StoredMessage
    reply: StoredMessage
    swipe: bool = False


@dataclass(frozen=True)
class Busy:
    """Another turn holds the session; it frees within `retry_after_ms` at the latest."""

    retry_after_ms: int


@dataclass(frozen=True)
class TurnLimit:
    user_turns: int


@dataclass(frozen=True)
class Stale:
    """The lookup a turn began on no longer holds (its guard): nothing was written."""


@dataclass(frozen=True)
class LookupGuard:
    """What a turn that did not read its session's lookup again began on: the string keys
    that lookup read beside the session, and `lookup_guard` of what it found."""

    keys: tuple[str, ...]
    digest: str


class FoundSession(NamedTuple):
    meta: SessionMeta | None
    cold: bool
    """Waits in the cold store (matters only when `meta` is None)."""
    fields: dict[str, str]
    """The session's hash as read (`lookup_guard`)."""


@dataclass(frozen=True)
class Cold:
    """The conversation was moved to the cold store (`conversation_archive`): it comes
    back before the turn begins."""


def now() -> float:
    return round(time.time(), 3)


def _float(value: str | None) -> float | None:
    return float(value) if value else None


PARSED_MESSAGES = 4_096
"""Stored messages a process keeps parsed: what a window read whole again (after an edit,
in another process's turn) and the transcript views share. A turn's own window is kept
by `known_windows`, which reads only the messages it has not seen."""


@lru_cache(maxsize=PARSED_MESSAGES)
def parse_stored(raw: str) -> StoredMessage:
    """A stored message from its JSON, parsed once: the JSON is the whole message (an edit or
    a swipe stores new JSON), so the same text is always the same message."""
    return StoredMessage.model_validate_json(raw)


def window_from_answer(values: list[Any], known: KnownWindow | None = None) -> Window:
    """A window as `WINDOW_LUA`'s `window_answer` lists it; `known`: the window whose hint
    the script was given, which supplies the messages it did not send."""
    length, watermark, first, summary, summarizing, epoch, memory_rev, sent_from, *raw = values
    first_index, sent_from = int(first), int(sent_from)
    messages = [parse_stored(item) for item in raw]
    if sent_from > first_index:
        if known is None:
            raise RuntimeError("a window answered in part without a known window")
        messages = known.through(first_index, sent_from) + messages
    return Window(length=int(length), watermark=int(watermark), first_index=first_index,
                  summary=summary or None, summarizing=bool(summarizing), epoch=int(epoch),
                  memory_rev=int(memory_rev), messages=messages)


def _hint(known: KnownWindow | None) -> str:
    return known.hint() if known is not None else ""


def _known_window(session_id: str, values: list[Any], known: KnownWindow | None) -> Window:
    """The window of a script's answer, remembered as this process's known window."""
    window = window_from_answer(values, known)
    known_windows.remember(session_id, KnownWindow(window.epoch, window.first_index,
                                                   tuple(window.messages)))
    return window


def _fields(found: dict[Any, Any]) -> dict[str, str]:
    """A session's hash as read, as text."""
    return {str(k): str(v) for k, v in found.items()}


def _meta(session_id: str, raw: dict[str, str]) -> SessionMeta | None:
    if not raw:
        return None
    return SessionMeta(
        session_id=session_id,
        owner=raw.get("owner"),
        character_id=raw.get("character_id") or None,
        persona=raw.get("persona") or None,
        scenario=json.loads(raw["scenario"]) if raw.get("scenario") else None,
        created_at=_float(raw.get("created_at")),
        user_turns=int(raw.get("user_turns", 0)),
        epoch=int(raw.get("epoch") or 0),
        summary=raw.get("summary") or None,
        summary_upto=int(raw.get("summary_upto", -1)),
        summary_tokens=int(raw.get("summary_tokens") or 0),
        summary_at=_float(raw.get("summary_at")),
        summary_error=raw.get("summary_error") or None,
        summary_failed_at=_float(raw.get("summary_failed_at")),
        pins=json.loads(raw["pins"]) if raw.get("pins", "{}") != "{}" else [],
        episodes=int(raw.get("episodes") or 0),
        recalled=json.loads(raw["recalled"]) if raw.get("recalled") else [],
    )


class SessionStore:
    """The one owner of a session's keys: every read and write of them is here or in
    `transcript_edits`, which takes them from `keys`."""

    def keys(self, session_id: str) -> list[str]:
        """The session's keys, in the order every session script takes them as KEYS."""
        keys = redis_keys()
        return [keys.session_messages(session_id), keys.session(session_id),
                keys.summary_lock(session_id), keys.turn_lease(session_id),
                keys.session_ids(session_id), keys.session_episodes(session_id),
                keys.session_cold(session_id)]

    async def load_meta(self, session_id: str) -> SessionMeta | None:
        return _meta(session_id, _fields(await (await get_redis()).hgetall(redis_keys().session(session_id))))

    async def read_values(self, keys: Sequence[str], sizes: Sequence[str] = (),
                          ) -> tuple[list[str | None], list[int]]:
        """The string values at `keys` and the sizes of the sorted sets at `sizes`, in one
        round trip (none when there is nothing to read)."""
        if not sizes:
            return await read_strings(keys), []
        _, values, counts = await self.find((), keys, sizes)
        return values, counts

    async def find(self, session_ids: Sequence[str], keys: Sequence[str], sizes: Sequence[str] = (),
                   ) -> tuple[list[FoundSession], list[str | None], list[int]]:
        """Each session's metadata and whether it waits in the cold store (which matters
        only for one not in Redis), the string values at `keys` and the sizes of the
        sorted sets at `sizes`, in one round trip: every place a session may be (its
        owner's, its address's) and what a turn reads anyway (the user's persona, the
        room left in their list) cost none of their own (on a cluster, the shards holding
        them are asked side by side)."""
        names = redis_keys()
        commands: list[Command] = []
        for session_id in session_ids:
            commands += [("HGETALL", names.session(session_id)), ("EXISTS", names.session_cold(session_id))]
        commands += [("GET", key) for key in keys]  # each alone: on a cluster they may lie on other shards
        commands += [("ZCARD", key) for key in sizes]
        answers = await pipelined_reads(await get_redis(), commands)
        found = []
        for n, session_id in enumerate(session_ids):
            fields = _fields(answers[2 * n])
            found.append(FoundSession(_meta(session_id, fields), bool(answers[2 * n + 1]), fields))
        values = answers[2 * len(session_ids):len(answers) - len(sizes)]
        return (found, [None if v is None else str(v) for v in values],
                [int(n) for n in answers[len(answers) - len(sizes):]])

    async def begin_turn(
        self, session_id: str, messages: list[StoredMessage], *, token: str,
        client_ids: list[str | None], setup: TurnSetup, setup_changed: bool,
        idempotency_key: str | None, swipes: Swipes = "never", guard: LookupGuard | None = None,
    ) -> Turn | Replay | Busy | TurnLimit | Cold | Stale:
        """One attempt to begin a turn (see the module's docstring); one round trip.

        `messages` are the request's messages as they would be stored (each with a new
        id), `client_ids` the ids the client gave them. `swipes`: whether a re-sent
        history already answered (whole, not cut) is a swipe rather than a retry.
        `guard`: the turn began on a lookup it did not read again (one Redis server only);
        `Stale` when that no longer holds."""
        settings = get_settings()
        known = known_windows.get(session_id)
        incoming = []
        for message, client_id in zip(messages, client_ids, strict=True):
            item: dict[str, str] = {"r": message.role, "c": normalized(message.content),
                                    "m": message.id}
            if client_id:
                item["i"] = client_id
            incoming.append(item)
        keys, args = self.keys(session_id), [
            settings.conversation_ttl_s, now(), WINDOW_CAP, token, settings.turn_lease_s * 1000,
            settings.max_turns, settings.turn_retry_window_s, idempotency_key or "",
            json.dumps(incoming, ensure_ascii=False),
            ("" if setup_changed else "=") + setup.encoded(),
            secrets.randbelow(2**40) * 1000, _SWIPES[swipes], _hint(known),
            *[m.model_dump_json(exclude_defaults=True) for m in messages]]
        if guard is not None:
            keys += guard.keys
            args.append(guard.digest)
        answer = await _BEGIN_SCRIPT(keys, args)
        kind = answer[0]
        if kind == "stale":
            return Stale()
        if kind == "busy":
            return Busy(max(0, int(answer[1])))
        if kind == "cold":
            return Cold()
        if kind == "turn_limit":
            return TurnLimit(int(answer[1]))
        if kind in ("retry", "swipe"):
            return Replay(parse_stored(answer[1]), parse_stored(answer[2]), swipe=kind == "swipe")
        return Turn(session_id=session_id, token=token,
                    window=_known_window(session_id, answer[3:], known),
                    kept=int(answer[1]), appended=int(answer[2]))

    async def read_window(self, session_id: str) -> Window:
        """The window alone (after a summary moved the watermark); one round trip."""
        keys = self.keys(session_id)[:3]
        known = known_windows.get(session_id)
        answer = await _READ_WINDOW_SCRIPT(keys, [WINDOW_CAP, _hint(known)])
        return _known_window(session_id, answer, known)

    async def append_reply(self, turn: Turn, message: StoredMessage,
                           recalled: Sequence[str] = ()) -> int:
        """Stores the turn's reply right after what it answers and ends the turn; answers
        the transcript's new length, or 0 when the reply was dropped (the session was
        deleted or rewound meanwhile, or the lease expired and another turn went first).
        `recalled`: the episodes the turn's prompt brought back, noted in the same step."""
        keys = self.keys(turn.session_id)
        length = await _REPLY_SCRIPT([keys[0], keys[1], keys[3], keys[4], keys[5]], [
            turn.token, str(turn.window.epoch), turn.window.length, get_settings().conversation_ttl_s,
            message.id, message.model_dump_json(exclude_defaults=True),
            json.dumps(list(recalled)), now()])
        if length:
            known_windows.extend(turn.session_id, epoch=turn.window.epoch,
                                 length=turn.window.length, message=message)
        return int(length)

    async def renew_turn(self, turn: Turn) -> bool:
        """Extends the turn's lease by `TURN_LEASE_S` from now: a stream still generating
        keeps its session. False: the lease is gone (the session was deleted, or the lease
        lapsed and another turn holds it); the reply's fence will drop the reply."""
        return bool(await _RENEW_TURN_SCRIPT([self.keys(turn.session_id)[3]],
                                             [turn.token, get_settings().turn_lease_s * 1000]))

    async def end_turn(self, turn: Turn) -> None:
        """Releases the turn's lease (nothing to store, or the turn failed)."""
        await _END_TURN_SCRIPT([self.keys(turn.session_id)[3]], [turn.token])

    async def discard(self, turn: Turn) -> bool:
        """Deletes the session the turn created, if the turn still holds it."""
        return bool(await _DISCARD_SCRIPT(self.keys(turn.session_id), [turn.token]))

    async def rewind_to(self, session_id: str, keep: int) -> int | None:
        """Keeps the first `keep` messages and removes the rest, moving the epoch on (and
        clearing a summary that covered a removed message); answers how many were
        removed, or None while a turn is in progress or the session does not exist."""
        removed = int(await _REWIND_SCRIPT(self.keys(session_id), [max(0, keep)]))
        return None if removed < 0 else removed

    async def length(self, session_id: str) -> int:
        return int(await (await get_redis()).llen(redis_keys().session_messages(session_id)))

    async def read_range(self, session_id: str, first: int, last: int) -> list[StoredMessage]:
        """Messages `first`..`last` (inclusive, 0-based) of the transcript."""
        raw = await (await get_redis()).lrange(redis_keys().session_messages(session_id), first, last)
        return [parse_stored(item) for item in raw]

    async def transcript(self, session_id: str) -> list[StoredMessage]:
        return await self.read_range(session_id, 0, -1)

    async def save_summary(
        self, session_id: str, *, expected_upto: int, upto: int, summary: str, tokens: int,
        epoch: int, episodes: Sequence[str] = (),
    ) -> bool:
        """Moves the watermark from `expected_upto` to `upto`; False if it had moved or the
        transcript was rewound since `epoch`. `episodes` (JSON, `episode_store.Episode`):
        what the folded messages are remembered as, stored in the same step."""
        keys = redis_keys()
        saved = await _SAVE_SUMMARY_SCRIPT(
            [keys.session_messages(session_id), keys.session(session_id),
             keys.session_episodes(session_id)],
            [expected_upto, upto, summary, tokens, now(), str(epoch),
             get_settings().max_episodes, *episodes],
        )
        return bool(saved)

    async def record_summary_failure(self, session_id: str, error: str) -> None:
        """Keeps the old summary; notes why and when, so a later turn retries."""
        await _RECORD_FAILURE_SCRIPT([redis_keys().session(session_id)], [error[:500], now()])

    async def delete(self, session_id: str) -> bool:
        """Removes the session with its lease (a reply still being generated is dropped),
        the lore its last turn fired and its cold marker: all in the session's slot, so one
        DEL. Its cold copy and list entry are the archive's (`conversation_archive.forget`)."""
        known_windows.forget(session_id)
        removed = await (await get_redis()).delete(
            *self.keys(session_id), redis_keys().session_lorebook(session_id))
        return bool(removed)

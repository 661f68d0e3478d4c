"""Conversations that outlive their hot window: moved out of Redis to the cold store
(`cold_store`) when idle `SESSION_HOT_TTL_S`, brought back whole on their next use.

Moving out never loses a conversation, whatever step a crash stops at:
1. a script reads the whole conversation (metadata, transcript, ids, memory, fired
   lore) as one canonical dump, refusing while a turn or a summary holds it;
2. the dump is written to the cold store, gzipped, and read back to verify it;
3. a second script deletes the Redis keys only if the dump is still what it was (same
   SHA-1) and nothing holds the conversation, and leaves a marker
   (`…session:{S}:cold`: the copy's SHA-256) with the conversation's remaining life.
A crash before 3 leaves the conversation whole in Redis (plus a copy nobody reads);
after 3, whole in the cold store.

Coming back (`bring_back`) is one script too: it writes the dump back only while the
conversation is absent and the marker is the one the copy was read under, so two
requests racing for it restore it exactly once. A missing or damaged copy is 409
`conversation_unreadable` for that conversation alone. The copy stays in the cold store
(it is overwritten by the next move, and deleted with the conversation).

`sweep_idle` runs on a schedule (the summarizer function deployed, a loop in the local
runner): it moves conversations idle longer than the hot window and forgets cold ones
past `CONVERSATION_RETENTION_DAYS` (hot ones expire in Redis on their own).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any, Literal

from roleplay.core.errors import Conflict
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.sessions import conversation_index
from roleplay.sessions.cold_store import cold_store

logger = logging.getLogger("roleplay.sessions.conversation_archive")

COPY_VERSION = 2
SWEEP_BATCH = 200
SWEEP_PAGES = 5
SWEEP_BUDGET_S = 120.0
"""One sweep moves at most SWEEP_PAGES × SWEEP_BATCH conversations, and stops taking new
ones after SWEEP_BUDGET_S (deployed, a move is an S3 PUT and GET: a few tenths of a
second; the function's timeout is 300 s); the next sweep does the rest."""

Outcome = Literal["archived", "busy", "cold", "gone", "changed"]

# Lua, with KEYS: 1 messages, 2 meta, 3 summary lock, 4 turn lease, 5 ids, 6 episodes,
# 7 cold marker, 8 fired lore. The conversation as one JSON text, hashes sorted by field
# so the same state always dumps the same; nil when it is not in Redis.
_DUMP = """
local function sorted_pairs(flat)
  local out = {}
  for i = 1, #flat, 2 do out[#out + 1] = {flat[i], flat[i + 1]} end
  table.sort(out, function(x, y) return x[1] < y[1] end)
  return out
end
local function dump()
  local meta = redis.call('HGETALL', KEYS[2])
  if #meta == 0 then return nil end
  return cjson.encode({meta = sorted_pairs(meta), messages = redis.call('LRANGE', KEYS[1], 0, -1),
                       ids = sorted_pairs(redis.call('HGETALL', KEYS[5])),
                       episodes = sorted_pairs(redis.call('HGETALL', KEYS[6])),
                       lorebook = redis.call('GET', KEYS[8]) or ''})
end
local function held()
  return redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[3]) == 1
end
"""

# Answers {'busy'} (a turn or a summary holds it), {'cold'} (already moved), {'gone'}, or
# {'ok', dump}.
_SNAPSHOT_SCRIPT = LuaScript(_DUMP + """
if held() then return {'busy'} end
local state = dump()
if state then return {'ok', state} end
if redis.call('EXISTS', KEYS[7]) == 1 then return {'cold'} end
return {'gone'}
""")

# ARGV: the dump's SHA-1 when copied, the marker. Deletes the conversation from Redis if it
# is still exactly what was copied and nothing holds it, leaving the marker for as long as
# the conversation had to live. Answers 1, or 0 when it changed (it stays).
_DROP_HOT_SCRIPT = LuaScript(_DUMP + """
if held() then return 0 end
local state = dump()
if not state or redis.sha1hex(state) ~= ARGV[1] then return 0 end
local ttl = redis.call('TTL', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[8])
if ttl > 0 then redis.call('SET', KEYS[7], ARGV[2], 'EX', ttl) else redis.call('SET', KEYS[7], ARGV[2]) end
return 1
""")

# ARGV: the marker the copy was read under, the dump (JSON), the conversation's TTL s.
# Writes the dump back while the conversation is absent and the marker unchanged; answers
# 'restored', 'hot' (someone else brought it back first) or 'moved' (the marker changed).
_RESTORE_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[2]) == 1 then return 'hot' end
if redis.call('GET', KEYS[7]) ~= ARGV[1] then return 'moved' end
local state = cjson.decode(ARGV[2])
local function put_pairs(key, pairs_)
  local args = {}
  for _, p in ipairs(pairs_) do
    args[#args + 1] = p[1]
    args[#args + 1] = p[2]
    if #args >= 400 then redis.call('HSET', key, unpack(args)) args = {} end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end
put_pairs(KEYS[2], state.meta)
local batch = {}
for _, raw in ipairs(state.messages) do
  batch[#batch + 1] = raw
  if #batch >= 200 then redis.call('RPUSH', KEYS[1], unpack(batch)) batch = {} end
end
if #batch > 0 then redis.call('RPUSH', KEYS[1], unpack(batch)) end
put_pairs(KEYS[5], state.ids)
put_pairs(KEYS[6], state.episodes)
if state.lorebook ~= '' then redis.call('SET', KEYS[8], state.lorebook) end
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[8]}) do
  redis.call('EXPIRE', key, ARGV[3])
end
redis.call('DEL', KEYS[7])
return 'restored'
""")


class ConversationUnreadable(Conflict):
    code = "conversation_unreadable"

    def __init__(self, why: str) -> None:
        super().__init__(f"this conversation was moved out of memory and cannot be read back: "
                         f"{why}", code=self.code)


def _keys(storage_id: str) -> list[str]:
    keys = redis_keys()
    return [keys.session_messages(storage_id), keys.session(storage_id),
            keys.summary_lock(storage_id), keys.turn_lease(storage_id),
            keys.session_ids(storage_id), keys.session_episodes(storage_id),
            keys.session_cold(storage_id), keys.session_lorebook(storage_id)]


def pack(storage_id: str, entry: str, state: str) -> bytes:
    """The cold copy, gzipped: a one-line JSON header (version, ids, when), then the dump's
    text as the dump script wrote it, so bringing it back never parses it in Python."""
    header = json.dumps({"v": COPY_VERSION, "id": storage_id, "entry": entry,
                         "archived_at": time.time()})
    return gzip.compress(f"{header}\n{state}".encode(), compresslevel=6)


def unpack(copy: bytes) -> tuple[dict[str, Any], str]:
    """The header and the dump's text of a cold copy (ValueError or OSError: damaged)."""
    header, _, state = gzip.decompress(copy).decode().partition("\n")
    meta: dict[str, Any] = json.loads(header)
    if meta.get("v") != COPY_VERSION or not state.startswith("{"):
        raise ValueError("not a cold copy of this version")
    return meta, state


def _meta(state: dict[str, Any]) -> dict[str, str]:
    return {str(field): str(value) for field, value in state.get("meta") or []}


def _listable(state: dict[str, Any]) -> dict[str, Any]:
    """What the user's list shows of a cold conversation (it cannot be read live)."""
    meta = _meta(state)
    messages = [json.loads(raw) for raw in state.get("messages") or []]
    first_user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    card: dict[str, Any] = {"messages": len(messages), "character_id": meta.get("character_id") or None,
                            "title": conversation_index.default_title(first_user)}
    if messages:
        card["preview"] = conversation_index.preview_of(messages[-1].get("content", ""))
    if meta.get("created_at"):
        card["created_at"] = float(meta["created_at"])
    return card


async def archive(entry: str) -> tuple[Outcome, str | None]:
    """Moves one conversation (its hot index entry, `conversation_index.member`) to the
    cold store, if it is in Redis and nothing holds it; answers how it went and, when it
    is cold now, its cold index entry (None: unknown, for one a crash left cold)."""
    storage_id, session_id = conversation_index.parse_member(entry)[:2]
    keys = _keys(storage_id)
    answer = await _SNAPSHOT_SCRIPT(keys, [])
    if answer[0] == "cold":
        marker = await (await get_redis()).get(keys[6])
        return "cold", json.loads(marker).get("cold_entry") if marker else None
    if answer[0] != "ok":
        return answer[0], None
    state = str(answer[1])
    parsed = json.loads(state)
    owner = _meta(parsed).get("owner", "")
    cold_entry = conversation_index.cold_member(storage_id, session_id, owner)
    copy = pack(storage_id, entry, state)
    store = cold_store()
    await store.put(storage_id, copy)
    if await store.get(storage_id) != copy:
        raise OSError(f"the cold copy of {storage_id} did not read back as written")
    marker = json.dumps({"sha256": hashlib.sha256(copy).hexdigest(), "entry": entry,
                         "cold_entry": cold_entry, "at": round(time.time(), 3)})
    if not await _DROP_HOT_SCRIPT(keys, [hashlib.sha1(state.encode()).hexdigest(), marker]):
        return "changed", None
    if owner:
        await conversation_index.merge_card(owner, session_id, _listable(parsed))
    return "archived", cold_entry


async def bring_back(storage_id: str) -> bool:
    """Restores the conversation from the cold store if it is there; answers whether it
    is in Redis now. Two callers racing restore it once; the loser finds it restored."""
    keys = _keys(storage_id)
    redis = await get_redis()
    marker = await redis.get(keys[6])
    if marker is None:
        return bool(await redis.exists(keys[1]))
    try:
        expected = json.loads(marker)
        copy = await cold_store().get(storage_id)
        if copy is None:
            raise ConversationUnreadable("its copy is missing")
        if hashlib.sha256(copy).hexdigest() != expected["sha256"]:
            raise ConversationUnreadable("its copy does not match the one stored")
        _, state = unpack(copy)
    except (ValueError, KeyError, TypeError, OSError, EOFError) as error:
        logger.warning("cold copy of %s unreadable: %r", storage_id, error)
        raise ConversationUnreadable("its copy is damaged") from None
    outcome = await _RESTORE_SCRIPT(keys, [marker, state, get_settings().conversation_ttl_s])
    if outcome == "restored":
        async with redis.pipeline(transaction=False) as pipe:
            if expected.get("cold_entry"):
                pipe.zrem(redis_keys().cold_conversations, expected["cold_entry"])
            if expected.get("entry"):
                pipe.zadd(redis_keys().hot_conversations, {expected["entry"]: int(time.time() * 1000)})
            await pipe.execute()
        logger.info("conversation %s brought back from the cold store", storage_id)
    return outcome != "moved" or bool(await redis.exists(keys[1]))


async def forget(user_id: str, session_id: str, storage_id: str) -> None:
    """Deletes the conversation's cold copy and marker and takes it off every list (its
    Redis keys are the session store's to delete)."""
    await cold_store().delete(storage_id)
    await (await get_redis()).delete(redis_keys().session_cold(storage_id))
    await conversation_index.forget(user_id, session_id, storage_id)


async def _sweep_one(entry: str, score: float, counts: Counter[str]) -> bool:
    """Moves one idle conversation out; answers whether it left the hot index."""
    keys = redis_keys()
    try:
        outcome, cold_entry = await archive(entry)
    except Exception:
        logger.exception("moving %s to the cold store failed; it stays in Redis", entry)
        counts["failed"] += 1
        return False
    if outcome in ("archived", "cold"):
        counts["archived" if outcome == "archived" else "skipped"] += 1
        moved = await conversation_index.remove_if_unchanged(keys.hot_conversations, entry, score)
        if moved and cold_entry:
            await (await get_redis()).zadd(keys.cold_conversations, {cold_entry: int(score)})
        return moved
    if outcome == "gone":  # expired in Redis, or deleted: the lists drop it when met
        counts["expired"] += 1
        gone = await conversation_index.remove_if_unchanged(keys.hot_conversations, entry, score)
        if gone:  # and a copy a restore left behind goes too
            await cold_store().delete(conversation_index.parse_member(entry)[0])
        return gone
    counts["skipped"] += 1
    return False


async def sweep_idle(now: float | None = None) -> dict[str, int]:
    """Moves the conversations idle longer than `SESSION_HOT_TTL_S` to the cold store and
    forgets those past `CONVERSATION_RETENTION_DAYS`; answers counts by outcome
    (`archived`, `expired`, `skipped`, `failed`). Conversations that stay (held by a turn,
    changed, failed) never block the ones behind them."""
    settings = get_settings()
    now = time.time() if now is None else now
    keys = redis_keys()
    redis = await get_redis()
    counts: Counter[str] = Counter(archived=0, expired=0, skipped=0, failed=0)
    cutoff = int((now - settings.session_hot_ttl_s) * 1000)
    stop_at = time.monotonic() + SWEEP_BUDGET_S
    stayed = 0  # entries left in the index (busy, changed, failed): the next page starts past them
    for _ in range(SWEEP_PAGES):
        idle: list[tuple[str, float]] = await redis.zrangebyscore(  # type: ignore[assignment]
            keys.hot_conversations, "-inf", cutoff, start=stayed, num=SWEEP_BATCH, withscores=True)
        for entry, score in idle:
            if time.monotonic() > stop_at:
                break
            stayed += not await _sweep_one(entry, score, counts)
        if len(idle) < SWEEP_BATCH or time.monotonic() > stop_at:
            break
    if settings.conversation_retention_days:
        oldest_kept = int((now - settings.conversation_retention_days * 86_400) * 1000)
        expired: list[str] = await redis.zrangebyscore(  # type: ignore[assignment]
            keys.cold_conversations, "-inf", oldest_kept, start=0, num=SWEEP_BATCH * SWEEP_PAGES)
        for entry in expired:
            storage_id, session_id, user_id = conversation_index.parse_member(entry)
            try:
                await forget(user_id, session_id, storage_id)
                counts["expired"] += 1
            except Exception:
                logger.exception("forgetting the expired %s failed", entry)
                counts["failed"] += 1
    return dict(counts)

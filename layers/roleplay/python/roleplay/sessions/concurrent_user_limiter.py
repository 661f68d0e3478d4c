"""The cap on users active at once (MAX_CONCURRENT_USERS), shared by every instance.

The GPU serves a fixed number of users well; past that, everyone gets slow. So each
request first claims a slot for its user in one sorted set (user id → last seen, ms),
and a user is active until ACTIVE_TTL_S passes without a request from them.

Admission is one Lua script, so checking the count and taking a slot cannot be split
by another request, however many Lambda instances or runner workers race: there is no
check-then-set window, and no `KEYS` scan that would block Redis. The script runs by
its hash (`roleplay.core.lua_script`).

Time is Redis's own clock (`TIME` inside the script), never the caller's: instances
whose clocks disagree would otherwise expire each other's users early or late. Scripts
may write after `TIME` since Redis 5, which replicates a script's effects, not its body.

A Redis that cannot be reached raises (redis `ConnectionError`/`TimeoutError`, answered
503 by the app); nothing here turns a failure into an admission.

A user this process admitted moments ago is not asked about again on every request
(`ensure_admitted`): their slot is refreshed at most every `REFRESH_EVERY_S` (or a tenth
of the TTL, if shorter), which saves a script call per turn; the slot's idle clock gets
that much coarser. A release in this process ends the shortcut at once; one in another
instance leaves the user uncounted until this process refreshes them.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from roleplay.core import metrics
from roleplay.core.errors import ApiError
from roleplay.core.identity import User
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

# Lua: the current time, in ms, from the server's clock.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: the active-users sorted set. ARGV: user id, ttl ms, cap, fallback id ('' for none).
# Drops users idle for ttl or longer; admits (and refreshes) a user already present,
# or a new one while fewer than cap are active. A user whose fallback holds a slot
# takes that slot over (an anonymous browser's first request was filed under its
# address): the slot moves, so minting cookies at one address never adds places.
# The key expires with its newest member, so an idle deployment leaves nothing behind.
# Answers {admitted 0/1, active count, ms until the oldest active user expires (0 when
# admitted), slot newly taken 0/1}.
_ADMIT_SCRIPT = LuaScript(_NOW + """
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local present = redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= false
if not present and ARGV[4] ~= '' and redis.call('ZREM', KEYS[1], ARGV[4]) == 1 then
  present = true
end
local admitted = present or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3])
if admitted then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {1, redis.call('ZCARD', KEYS[1]), 0, present and 0 or 1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, redis.call('ZCARD', KEYS[1]), tonumber(oldest[2]) + ttl - now}
""")

# KEYS: the active-users sorted set. ARGV: ttl ms. Drops idle users; answers how many remain.
_COUNT_SCRIPT = LuaScript(_NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
""")


REFRESH_EVERY_S = 30.0
_REMEMBERED_USERS = 10_000
_admitted: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
"""Per process, by (active-users key, occupant): until when its admission stands without
asking Redis, and the active count it saw."""


def too_many_users_message(max_users: int) -> str:
    """The design document's words, with the real cap."""
    return f"최대 동시 접속자 수({max_users}명)에 도달했습니다. 잠시 후 다시 시도해주세요."


class TooManyUsers(ApiError):
    """All slots are taken; `Retry-After` says when the first one frees, at the latest."""

    status_code = 503
    code = "too_many_users"

    def __init__(self, max_users: int, retry_after_s: int) -> None:
        super().__init__(
            too_many_users_message(max_users),
            headers={"Retry-After": str(retry_after_s)},
            details={"max_concurrent_users": max_users, "retry_after_s": retry_after_s},
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Admission:
    admitted: bool
    active: int
    """Users active after this request (the cap or more when refused)."""
    retry_after_s: int
    """Seconds until the oldest active user's slot expires, at least 1; 0 when admitted."""
    new: bool = field(default=False, compare=False)
    """This admission took a slot the user did not hold (a failed first turn gives it back)."""


def occupant_id(user: User, session_id: str | None = None) -> str:
    """Whom a slot belongs to: the user, signed in or an anonymous client (its cookie or
    its address), never a session: however many sessions a client opens, it holds one
    place. `session_id` is accepted and ignored (older callers pass it)."""
    return user.id


class ConcurrentUserLimiter:
    """Cap and TTL default to MAX_CONCURRENT_USERS and ACTIVE_TTL_S, read per call;
    passing them (tests: a TTL under a minute) overrides the settings."""

    def __init__(self, max_users: int | None = None, ttl_s: float | None = None) -> None:
        if max_users is not None and max_users < 1:
            raise ValueError("max_users must be at least 1")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._max_users = max_users
        self._ttl_s = ttl_s

    @property
    def max_users(self) -> int:
        return self._max_users if self._max_users is not None else get_settings().max_concurrent_users

    @property
    def ttl_ms(self) -> int:
        ttl_s = self._ttl_s if self._ttl_s is not None else get_settings().active_ttl_s
        return max(1, round(ttl_s * 1000))

    async def admit(self, user: str | User) -> Admission:
        """Takes or refreshes the user's slot if it may have one (taking over the slot of
        its `fallback_owner`, if that holds one); one round trip."""
        user_id, fallback = (user, "") if isinstance(user, str) else (
            occupant_id(user), user.fallback_owner or "")
        admitted, active, retry_ms, *new = await _ADMIT_SCRIPT(
            [redis_keys().active_users], [user_id, self.ttl_ms, self.max_users, fallback])
        if admitted:
            return Admission(admitted=True, active=int(active), retry_after_s=0,
                             new=bool(new and int(new[0])))
        return Admission(admitted=False, active=int(active),
                         retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)))

    async def ensure_admitted(self, user: str | User) -> Admission:
        """`admit`, raising `TooManyUsers` (503 with Retry-After) when refused; a user
        admitted by this process less than `REFRESH_EVERY_S` ago is admitted at once."""
        key = (redis_keys().active_users, user if isinstance(user, str) else occupant_id(user))
        held = _admitted.get(key)
        if held is not None and held[0] > time.monotonic():
            metrics.inc("admissions_total", result="admitted")
            return Admission(admitted=True, active=held[1], retry_after_s=0)
        admission = await self.admit(user)
        metrics.inc("admissions_total", result="admitted" if admission.admitted else "refused")
        metrics.set_gauge("active_users", admission.active)
        if not admission.admitted:
            raise TooManyUsers(self.max_users, admission.retry_after_s)
        if not isinstance(user, str) and user.fallback_owner:  # its slot may have moved here
            _admitted.pop((key[0], user.fallback_owner), None)
        _admitted[key] = (time.monotonic() + min(REFRESH_EVERY_S, self.ttl_ms / 10_000),
                          admission.active)
        _admitted.move_to_end(key)
        if len(_admitted) > _REMEMBERED_USERS:
            _admitted.popitem(last=False)
        return admission

    async def release(self, user: str | User) -> bool:
        """Frees the user's slot now (session ended, logged out); False if it held none."""
        user_id = user if isinstance(user, str) else occupant_id(user)
        _admitted.pop((redis_keys().active_users, user_id), None)
        return bool(await (await get_redis()).zrem(redis_keys().active_users, user_id))

    async def active_count(self) -> int:
        count = await _COUNT_SCRIPT([redis_keys().active_users], [self.ttl_ms])
        return int(count)

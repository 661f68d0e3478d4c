"""Renames, once, the keys named before hash tags (`redis_keys.KEYS_VERSION`).

A deployment that ran on one Redis keeps its users' personas, the GPU's state and its
live sessions across the upgrade: the first process of the new version to reach Redis
renames each old key to its tagged name (RENAMENX keeps value and TTL, and is atomic, so
processes that start together cannot lose or double a key), then records the version.
Later processes read that one key and do nothing more. Characters, their images and
index, token ratios, the user cap, breakers and the anonymous cookie key kept their names.

Only a single server is migrated: the old names never worked on a cluster.
"""

from __future__ import annotations

import logging
import re

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from roleplay.core.redis_keys import KEYS_VERSION, RedisKeys, redis_keys

logger = logging.getLogger("roleplay.redis")

_SESSION = re.compile(r"session:(s[0-9a-f]+)(:messages|:lorebook|:summary-lock|:turn|:ids)?")
_QUOTA = re.compile(r"quota:(.+):(rpm|tokens|tts):(\d+)")
_GPU_LEASES = re.compile(r"gpu:leases:(.+)")


def tagged_name(keys: RedisKeys, old: str) -> str | None:
    """The new name of a key named the old way, or None if it keeps its name."""
    if not old.startswith(keys.prefix) or "{" in old:
        return None
    rest = old[len(keys.prefix):]
    if session := _SESSION.fullmatch(rest):
        return keys.session(session[1]) + (session[2] or "")
    if rest.startswith("user:") and rest.endswith(":persona"):
        return keys.user_persona(rest[len("user:"):-len(":persona")])
    if quota := _QUOTA.fullmatch(rest):
        user_id, kind, number = quota.groups()
        minute_or_day = int(number)
        rpm, tokens, tts = keys.quotas(user_id, minute_or_day, minute_or_day)
        return {"rpm": rpm, "tokens": tokens, "tts": tts}[kind]
    if rest.startswith("tts-busy:"):
        return keys.tts_busy(rest[len("tts-busy:"):])
    if rest == "gpu:state":
        return keys.gpu_state
    if rest == "gpu:switch-lock":
        return keys.gpu_switch_lock
    if leases := _GPU_LEASES.fullmatch(rest):
        return keys.gpu_leases(leases[1])
    return None


def _glob_escaped(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


async def migrate(redis: Redis, keys: RedisKeys) -> int:
    """Renames every old key under `keys.prefix`; answers how many it renamed."""
    renamed = 0
    async for old in redis.scan_iter(match=_glob_escaped(keys.prefix) + "*", count=1000):
        new = tagged_name(keys, str(old))
        if new is None:
            continue
        try:
            renamed += int(await redis.renamenx(old, new))
        except ResponseError:  # renamed meanwhile by another process, or expired
            continue
    await redis.set(keys.keys_version, KEYS_VERSION)
    return renamed


async def migrate_once(redis: Redis) -> None:
    """`migrate` unless the recorded version is current: one GET per process."""
    keys = redis_keys()
    if await redis.get(keys.keys_version) == KEYS_VERSION:
        return
    renamed = await migrate(redis, keys)
    if renamed:
        logger.warning("renamed %d Redis keys to the hash-tagged layout %s", renamed, KEYS_VERSION)

"""The GPU mode coordinator: the resident mode, a lease per request, and one switch at a time.

State lives in Redis, so every instance (runner workers, Lambdas) agrees:
- `gpu:state` (hash): the resident `mode` and `since_ms`, the `target` of a switch that
  has started, and counters (`switches`, `switch_ms`, `waits`, `wait_ms`);
- `gpu:leases:{mode}` (sorted set): one member per request in flight in that mode, scored
  by its expiry, so a crashed holder cannot pin a mode forever;
- `gpu:switch-lock`: who is switching now.

A request names the service it needs (`llm`, `tts`). If the resident mode has it and no
switch has started, one script admits it: requests for the resident mode never wait
behind a switch that has not started. Otherwise one waiting request takes the switch
lock and switches: it waits until the resident mode has been there
GPU_MIN_RESIDENCY_S (so alternating chat and speech cannot thrash), marks the switch
started (new requests for the old mode now wait), waits for the old mode's requests to
finish (at most GPU_SWITCH_DRAIN_S: a request in flight is never cut), releases what
the new mode does not need, loads what it needs, and records the new mode. Everyone
else polls. Whatever cannot finish within GPU_SWITCH_WAIT_S (or a dead hook) is a 503
`gpu_busy` with Retry-After, never a hang.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from roleplay.core.errors import ServiceUnavailable
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.gpu.actions import ActionFailed, run_actions
from roleplay.gpu.config import GpuModes, gpu_modes

logger = logging.getLogger("roleplay.gpu")

POLL_S = 0.05

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: state, then the lease set of each candidate mode. ARGV: token, lease ms, then the
# candidate modes in KEYS order. Admits into the resident mode when it is a candidate
# and no switch has started. Answers {1, mode} or {0, resident mode, target}.
_ENTER = LuaScript(_NOW + """
local mode = redis.call('HGET', KEYS[1], 'mode') or ''
local target = redis.call('HGET', KEYS[1], 'target') or ''
if target == '' then
  for i = 3, #ARGV do
    if ARGV[i] == mode then
      redis.call('ZADD', KEYS[i - 1], now + tonumber(ARGV[2]), ARGV[1])
      return {1, mode}
    end
  end
end
return {0, mode, target}
""")

# KEYS: state. ARGV: target mode, min residency ms. Starts a switch unless the resident
# mode is still within its residency. Answers {1, old mode} (started), {2} (already
# resident) or {0, ms of residency left}.
_BEGIN_SWITCH = LuaScript(_NOW + """
local mode = redis.call('HGET', KEYS[1], 'mode') or ''
if mode == ARGV[1] then return {2} end
if mode ~= '' then
  local left = tonumber(redis.call('HGET', KEYS[1], 'since_ms') or '0') + tonumber(ARGV[2]) - now
  if left > 0 then return {0, left} end
end
redis.call('HSET', KEYS[1], 'target', ARGV[1])
return {1, mode}
""")

# KEYS: a lease set. Drops expired leases; answers how many are in flight.
_IN_FLIGHT = LuaScript(_NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
""")

# KEYS: state. ARGV: new mode ('' = unknown after a failure), switch ms (or -1 when
# aborted with the old mode kept).
_END_SWITCH = LuaScript(_NOW + """
if tonumber(ARGV[2]) >= 0 then
  redis.call('HSET', KEYS[1], 'mode', ARGV[1], 'since_ms', now, 'target', '')
  if ARGV[1] ~= '' then
    redis.call('HINCRBY', KEYS[1], 'switches', 1)
    redis.call('HINCRBY', KEYS[1], 'switch_ms', ARGV[2])
  end
else
  redis.call('HSET', KEYS[1], 'target', '')
end
return 1
""")

_RELEASE_LOCK = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


class GpuBusy(ServiceUnavailable):
    """The GPU could not be given to this request in time; try again shortly."""

    code = "gpu_busy"

    def __init__(self, message: str, retry_after_s: float) -> None:
        retry = max(1, math.ceil(retry_after_s))
        super().__init__(message, headers={"Retry-After": str(retry)},
                         details={"retry_after_s": retry})


@dataclass(frozen=True)
class GpuStatus:
    strategy: str
    mode: str | None = None
    since_s: float | None = None
    switching_to: str | None = None
    switches: int = 0
    switch_ms_total: int = 0
    waits: int = 0
    wait_ms_total: int = 0


class _Switch(Exception):
    """Internal: the caller holds the switch lock and must switch to `target`."""


class GpuCoordinator:
    def __init__(self, config: GpuModes) -> None:
        self.config = config

    async def acquire(self, service: str) -> tuple[str, str]:
        """Waits until a mode with `service` is resident and takes a lease in it; answers
        (mode, token)."""
        settings = get_settings()
        keys = redis_keys()
        candidates = self.config.modes_with(service)
        token = uuid.uuid4().hex
        lease_ms = round(settings.gpu_lease_ttl_s * 1000)
        started = time.monotonic()
        deadline = started + settings.gpu_switch_wait_s
        while True:
            entered, *rest = await _ENTER([keys.gpu_state, *map(keys.gpu_leases, candidates)],
                                          [token, lease_ms, *candidates])
            if int(entered):
                await self._note_wait(started)
                return str(rest[0]), token
            resident, target = str(rest[0]), str(rest[1])
            left = deadline - time.monotonic()
            if left <= 0:
                raise GpuBusy(f"the GPU is busy with mode {target or resident!r}; the {service} "
                              f"service could not be made resident in {settings.gpu_switch_wait_s:g} s",
                              retry_after_s=settings.gpu_min_residency_s or 5)
            if target:  # a switch is under way: see where it lands
                await asyncio.sleep(POLL_S)
                continue
            await self._try_switch(candidates[0], resident, deadline)

    async def release(self, mode: str, token: str) -> None:
        await (await get_redis()).zrem(redis_keys().gpu_leases(mode), token)

    async def _note_wait(self, started: float) -> None:
        waited_ms = round((time.monotonic() - started) * 1000)
        if waited_ms >= 1:
            redis, key = await get_redis(), redis_keys().gpu_state
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "waits", 1)
                pipe.hincrby(key, "wait_ms", waited_ms)
                await pipe.execute()

    async def _try_switch(self, target: str, resident: str, deadline: float) -> None:
        """Switches to `target` if this request gets the switch lock; else lets it poll."""
        settings, keys, redis = get_settings(), redis_keys(), await get_redis()
        token = uuid.uuid4().hex
        lock_ms = round((settings.gpu_switch_drain_s + 2 * settings.gpu_action_timeout_s + 30) * 1000)
        if not await redis.set(keys.gpu_switch_lock, token, nx=True, px=lock_ms):
            await asyncio.sleep(POLL_S)
            return
        try:
            began, *rest = await _BEGIN_SWITCH([keys.gpu_state],
                                               [target, round(settings.gpu_min_residency_s * 1000)])
            if int(began) == 2:
                return
            if int(began) == 0:
                wait_s = int(rest[0]) / 1000
                if time.monotonic() + wait_s > deadline:
                    raise GpuBusy(f"mode {resident!r} keeps the GPU for its minimum residency "
                                  f"(GPU_MIN_RESIDENCY_S); {wait_s:.1f} s left", retry_after_s=wait_s)
                await asyncio.sleep(min(wait_s, 0.5))
                return
            await self._switch(str(rest[0]), target)
        finally:
            await _RELEASE_LOCK([keys.gpu_switch_lock], [token])

    async def _switch(self, old: str, new: str) -> None:
        settings, keys = get_settings(), redis_keys()
        started = time.monotonic()
        if old:
            drain_until = started + settings.gpu_switch_drain_s
            while int(await _IN_FLIGHT([keys.gpu_leases(old)], [])) > 0:
                if time.monotonic() > drain_until:
                    await _END_SWITCH([keys.gpu_state], [old, -1])
                    raise GpuBusy(f"requests in mode {old!r} did not finish within "
                                  f"{settings.gpu_switch_drain_s:g} s (GPU_SWITCH_DRAIN_S)",
                                  retry_after_s=5)
                await asyncio.sleep(POLL_S)
        keep = set(self.config.modes.get(new, []))
        had = set(self.config.modes.get(old, [])) if old else set()
        to_release = [s for s in self.config.services if s not in keep and (s in had or not old)]
        to_load = [s for s in self.config.modes.get(new, []) if s not in had]
        try:
            for service in to_release:
                await run_actions(self.config.services[service].release)
            for service in to_load:
                await run_actions(self.config.services[service].load)
        except ActionFailed as error:
            logger.warning("GPU switch %r -> %r failed: %s", old, new, error)
            await _END_SWITCH([keys.gpu_state], ["", 0])  # the GPU's state is unknown now
            raise GpuBusy(f"switching the GPU to mode {new!r} failed: {error}", retry_after_s=10) from None
        elapsed_ms = round((time.monotonic() - started) * 1000)
        await _END_SWITCH([keys.gpu_state], [new, elapsed_ms])
        logger.info("GPU switched %r -> %r in %d ms", old or "(unknown)", new, elapsed_ms)


@asynccontextmanager
async def gpu_lease(service: str) -> AsyncIterator[None]:
    """Holds a place on the GPU for one upstream call that needs `service`. With the
    default `coresident` strategy (or a service no mode names) it does nothing at all."""
    config = gpu_modes()
    if not config.switches(service):
        yield
        return
    coordinator = GpuCoordinator(config)
    mode, token = await coordinator.acquire(service)
    try:
        yield
    finally:
        await asyncio.shield(coordinator.release(mode, token))


def _int(value: str | None) -> int:
    return int(value) if value else 0


async def gpu_status() -> GpuStatus:
    """What health shows: the strategy, the resident mode, and switch and wait figures."""
    config = gpu_modes()
    if config.strategy != "switching":
        return GpuStatus(strategy=config.strategy)
    raw = await (await get_redis()).hgetall(redis_keys().gpu_state)
    state = {str(k): str(v) for k, v in raw.items()}
    since = state.get("since_ms")
    return GpuStatus(
        strategy=config.strategy, mode=state.get("mode") or None,
        since_s=round(int(since) / 1000, 3) if since else None,
        switching_to=state.get("target") or None, switches=_int(state.get("switches")),
        switch_ms_total=_int(state.get("switch_ms")), waits=_int(state.get("waits")),
        wait_ms_total=_int(state.get("wait_ms")))

"""What making a service resident, or releasing it, does on Server A.

vLLM's sleep routes (vllm/entrypoints/serve/dev/sleep/api_router.py) answer as soon as
the command is sent, before the engine has finished ("FIXME: ... the sleep command is
sent but does not finish yet when we return a response"), so each is followed by
polling `GET /is_sleeping` until the engine says it got there. `POST /sleep` is sent
with `mode=wait`: its default, `abort`, would cut requests in flight, and the
coordinator has drained them anyway. GPT-SoVITS's api_v2 can load weights but cannot
unload them (its `/control` only restarts or exits), so releasing it is a hook to
whatever manages its process on Server A.

Every action is bounded by GPU_ACTION_TIMEOUT_S; a failure raises `ActionFailed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx

from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.gpu.config import Action, GptSovitsWeights, HttpHook, VllmSleep, VllmWake

POLL_S = 0.1


class ActionFailed(Exception):
    """A load or release did not complete; the GPU's state is no longer known."""


def _root(url: str) -> str:
    """vLLM's sleep routes hang off the server's root, not `/v1`."""
    return url.rstrip("/").removesuffix("/v1")


async def _expect(response: httpx.Response, wanted: int, what: str) -> None:
    if response.status_code != wanted:
        text = (await response.aread()).decode("utf-8", "replace")[:200]
        raise ActionFailed(f"{what} answered {response.status_code} (wanted {wanted}): {text}")


async def _wait_sleeping(http: httpx.AsyncClient, url: str, sleeping: bool, deadline: float) -> None:
    while True:
        response = await http.get(f"{_root(url)}/is_sleeping")
        await _expect(response, 200, "vLLM /is_sleeping")
        if response.json().get("is_sleeping") is sleeping:
            return
        if time.monotonic() > deadline:
            raise ActionFailed(f"vLLM did not {'sleep' if sleeping else 'wake up'} in time")
        await asyncio.sleep(POLL_S)


async def _run(http: httpx.AsyncClient, action: Action, deadline: float) -> None:
    if isinstance(action, VllmSleep):
        response = await http.post(f"{_root(action.url)}/sleep",
                                   params={"level": str(action.level), "mode": "wait"})
        await _expect(response, 200, "vLLM /sleep")
        await _wait_sleeping(http, action.url, True, deadline)
    elif isinstance(action, VllmWake):
        response = await http.post(f"{_root(action.url)}/wake_up")
        await _expect(response, 200, "vLLM /wake_up")
        await _wait_sleeping(http, action.url, False, deadline)
    elif isinstance(action, GptSovitsWeights):
        # The speech client remembers which pair it loaded; that record is void now.
        await (await get_redis()).delete(redis_keys().tts_engine_weights)
        for route, path in (("/set_gpt_weights", action.gpt_weights),
                            ("/set_sovits_weights", action.sovits_weights)):
            if path:
                response = await http.get(f"{action.url.rstrip('/')}{route}",
                                          params={"weights_path": path})
                await _expect(response, 200, f"GPT-SoVITS {route}")
    elif isinstance(action, HttpHook):
        response = await http.request(action.method, action.url, json=action.body)
        await _expect(response, action.expect, f"hook {action.method} {action.url}")


async def run_actions(actions: Sequence[Action]) -> None:
    """Runs `actions` in order, all within GPU_ACTION_TIMEOUT_S."""
    if not actions:
        return
    limit = get_settings().gpu_action_timeout_s
    deadline = time.monotonic() + limit
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(limit, connect=3.0)) as http:
            await asyncio.wait_for(_run_all(http, actions, deadline), limit)
    except TimeoutError:
        raise ActionFailed(f"GPU actions took longer than {limit:g} s") from None
    except httpx.HTTPError as error:
        raise ActionFailed(f"GPU action failed: {type(error).__name__}: {error}") from None
    except ValueError as error:  # an /is_sleeping answer that is not JSON
        raise ActionFailed(f"GPU action got an unreadable answer: {error}") from None


async def _run_all(http: httpx.AsyncClient, actions: Sequence[Action], deadline: float) -> None:
    for action in actions:
        await _run(http, action, deadline)

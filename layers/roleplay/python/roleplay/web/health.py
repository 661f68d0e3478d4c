"""Is each part of Server B's world reachable, and able to serve? Fast, and never hangs.

Every probe runs at once under `HEALTH_TIMEOUT_S`. Redis is required (503 when it is
down); the GPU services are reported but do not fail the check, so the API stays up
and answers clear 502s while Server A restarts.

What is probed, at the base URL the clients use:
- the LLM, as its dialect says (`UpstreamDialect.health_probe`). vLLM: `GET /health`, 200
  or not (503 when its engine is dead; `/v1/models` stays 200 then); a server without
  `/health` (llama-cpp-python's: 404) is asked `/v1/models`. Ollama: `GET /api/version`,
  and `DEFAULT_MODEL` present in `/api/tags`.
- GPT-SoVITS (api_v2): `GET /control` without a command, which answers 400 "command is
  required" at once and neither synthesizes nor blocks. A non-streaming synthesis blocks
  api_v2's event loop, so during one no HTTP answer comes; then a TCP connect that
  succeeds reports `busy` (alive, synthesizing), not `unreachable`.

A probe's status: `ok`; `busy`; `down` (it answered, but a status that says it cannot
serve: 404 or 5xx, or the model is missing); `unreachable` (no answer); `not_configured`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

import httpx
from pydantic import BaseModel

from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import cluster_states
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.client import llm_client
from roleplay.llm.dialect import upstream_dialect
from roleplay.llm.wire import ProbeDown, http_holder

ProbeStatus = Literal["ok", "busy", "down", "unreachable", "not_configured"]


class ProbeResult(BaseModel):
    status: ProbeStatus
    latency_ms: float | None = None
    target: str | None = None
    error: str | None = None


class GpuReport(BaseModel):
    """The GPU's modes (`GPU_MODES`): which is resident, and what switching has cost."""

    strategy: str
    mode: str | None = None
    switching_to: str | None = None
    switches: int = 0
    switch_ms_total: int = 0
    waits: int = 0
    wait_ms_total: int = 0


class HealthReport(BaseModel):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, ProbeResult]
    gpu: GpuReport | None = None
    breakers: dict[str, Literal["closed", "open"]] = {}
    """Each upstream's circuit breaker, as `llm[0]`, `tts[1]`... in configuration order."""


async def _timed(probe: Callable[[], Awaitable[None]], target: str, limit_s: float,
                 when_silent: Callable[[], Awaitable[bool]] | None = None) -> ProbeResult:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), limit_s)
    except TimeoutError:
        if when_silent is not None and await when_silent():
            return ProbeResult(status="busy", target=target,
                               error=f"accepts connections but answered nothing in {limit_s}s")
        return ProbeResult(status="unreachable", target=target, error=f"no answer in {limit_s}s")
    except ProbeDown as error:
        return ProbeResult(status="down", target=target, error=str(error)[:300])
    except Exception as error:  # any other failure of a probe is "unreachable", with why
        return ProbeResult(status="unreachable", target=target,
                           error=f"{type(error).__name__}: {error}"[:300])
    return ProbeResult(status="ok", target=target,
                       latency_ms=round((time.perf_counter() - started) * 1000, 2))


# KEYS: the probe key. ARGV: a fresh token. Answers the token read back.
_WRITE_AND_READ = LuaScript("""
redis.call('SET', KEYS[1], ARGV[1], 'PX', 10000)
return redis.call('GET', KEYS[1])
""")


async def _probe_redis() -> None:
    """Ok only when Redis can serve a turn: a script ran and its write reached the shard
    owning the probe key, and, on a cluster, every node says the cluster is `ok` (a
    node that lost a shard says `fail` once `cluster-node-timeout` has passed; a node
    that cannot be reached fails the probe as unreachable)."""
    for node, state in (await cluster_states()).items():
        if state != "ok":
            raise ProbeDown(f"cluster_state is {state} on {node}")
    token = uuid.uuid4().hex
    if await _WRITE_AND_READ([redis_keys().health_probe], [token]) != token:
        raise ProbeDown("a write to Redis did not read back")


async def _get(url: str) -> httpx.Response:
    http = await http_holder.get()
    return await http.get(url, timeout=httpx.Timeout(get_settings().health_timeout_s))


def _gpt_sovits_probe(base: str) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        response = await _get(f"{base}/control")
        if not (response.status_code < 300 or response.status_code == 400):
            raise ProbeDown.answered(response)

    return probe


def _accepts_connections(url: str, limit_s: float) -> Callable[[], Awaitable[bool]]:
    async def connect() -> bool:
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parsed.host, port), limit_s)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    return connect


def _redact(url: str) -> str:
    parsed = httpx.URL(url) if "://" in url else None
    if parsed is None or not parsed.password:
        return url
    return str(parsed.copy_with(password="***"))


async def check_health() -> HealthReport:
    settings = get_settings()
    timeout = settings.health_timeout_s
    checks: dict[str, Awaitable[ProbeResult]] = {
        "redis": _timed(_probe_redis, _redact(settings.effective_redis_url), timeout),
    }
    if settings.llm_base_url:
        base = llm_client(settings).base_url
        probe = upstream_dialect(settings).health_probe(base, settings.default_model, _get)
        checks["llm"] = _timed(probe, base, timeout)
    if settings.tts_base_url:
        tts = settings.tts_base_url.rstrip("/")
        checks["tts"] = _timed(_gpt_sovits_probe(tts), tts, timeout,
                               when_silent=_accepts_connections(tts, timeout / 2))
    names = list(checks)
    results = dict(zip(names, await asyncio.gather(*checks.values()), strict=True))
    if not settings.tts_base_url and settings.tts_service in (None, "espeak"):
        results["tts"] = ProbeResult(status="ok", target="embedded eSpeak NG")
    for name in ("llm", "tts"):
        results.setdefault(name, ProbeResult(status="not_configured"))
    if results["redis"].status != "ok":
        overall: Literal["ok", "degraded", "down"] = "down"
    elif any(r.status in ("unreachable", "down") for r in results.values()):
        overall = "degraded"
    else:
        overall = "ok"
    return HealthReport(status=overall, checks=results, gpu=await _gpu_report(),
                        breakers=await _breakers(settings))


async def _gpu_report() -> GpuReport | None:
    from roleplay.gpu.coordinator import gpu_status

    try:
        status = await gpu_status()
    except Exception:  # Redis down: already reported by its own check
        return None
    return GpuReport(strategy=status.strategy, mode=status.mode, switching_to=status.switching_to,
                     switches=status.switches, switch_ms_total=status.switch_ms_total,
                     waits=status.waits, wait_ms_total=status.wait_ms_total)


async def _breakers(settings: Settings) -> dict[str, Literal["closed", "open"]]:
    from roleplay.ops.failover import base_urls, breaker_report

    report: dict[str, Literal["closed", "open"]] = {}
    try:
        for name, urls in (("llm", base_urls(settings.llm_base_url, settings.llm_base_urls)),
                           ("tts", base_urls(settings.tts_base_url, settings.tts_base_urls))):
            states = await breaker_report(urls)
            report.update({f"{name}[{n}]": "open" if states[url] == "open" else "closed"
                           for n, url in enumerate(urls)})
    except Exception:  # Redis down: its own check says so
        return {}
    return report

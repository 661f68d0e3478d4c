"""Is each part of Server B's world reachable? Fast, and never hangs.

Every probe runs at once under `HEALTH_TIMEOUT_S`. Redis is required (503 when it is
down); the GPU services are reported but do not fail the check, so the API stays up
and answers clear 502s while Server A restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import httpx
from pydantic import BaseModel

from roleplay.llm_client import http_holder
from roleplay.redis_client import get_redis
from roleplay.settings import Settings, get_settings

ProbeStatus = Literal["ok", "unreachable", "not_configured"]


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


async def _timed(probe: Callable[[], Awaitable[None]], target: str, limit_s: float) -> ProbeResult:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), limit_s)
    except TimeoutError:
        return ProbeResult(status="unreachable", target=target, error=f"no answer in {limit_s}s")
    except Exception as error:  # any failure of a probe is "unreachable", with why
        return ProbeResult(status="unreachable", target=target,
                           error=f"{type(error).__name__}: {error}"[:300])
    return ProbeResult(status="ok", target=target,
                       latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def _ping_redis() -> None:
    await (await get_redis()).ping()


def _http_probe(url: str) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        http = await http_holder.get()
        await http.get(url, timeout=httpx.Timeout(get_settings().health_timeout_s))

    return probe


def _redact(url: str) -> str:
    parsed = httpx.URL(url) if "://" in url else None
    if parsed is None or not parsed.password:
        return url
    return str(parsed.copy_with(password="***"))


async def check_health() -> HealthReport:
    settings = get_settings()
    timeout = settings.health_timeout_s
    checks: dict[str, Awaitable[ProbeResult]] = {
        "redis": _timed(_ping_redis, _redact(settings.effective_redis_url), timeout),
    }
    if settings.llm_base_url:
        base = settings.llm_base_url.rstrip("/").removesuffix("/v1")
        path = "/api/tags" if settings.llm_service == "ollama" else "/v1/models"
        checks["llm"] = _timed(_http_probe(base + path), base, timeout)
    if settings.tts_base_url:
        checks["tts"] = _timed(_http_probe(settings.tts_base_url), settings.tts_base_url, timeout)
    names = list(checks)
    results = dict(zip(names, await asyncio.gather(*checks.values()), strict=True))
    if not settings.tts_base_url and settings.tts_service in (None, "espeak"):
        results["tts"] = ProbeResult(status="ok", target="embedded eSpeak NG")
    for name in ("llm", "tts"):
        results.setdefault(name, ProbeResult(status="not_configured"))
    if results["redis"].status != "ok":
        overall: Literal["ok", "degraded", "down"] = "down"
    elif any(r.status == "unreachable" for r in results.values()):
        overall = "degraded"
    else:
        overall = "ok"
    return HealthReport(status=overall, checks=results, gpu=await _gpu_report(),
                        breakers=await _breakers(settings))


async def _gpu_report() -> GpuReport | None:
    from roleplay.gpu import gpu_status

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

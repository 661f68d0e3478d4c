"""Issue 26: what a Redis Cluster costs a chat turn, and how sessions spread over its shards.

Side by side in one run: two Server B processes (the local runner, request log and metrics
on, as in the ops bench), one on a private single Redis, one on a private three-node
Redis Cluster on loopback (tests/support/redis_cluster.py; its nodes' append-only files
are turned off, as the single Redis has none), one instant stub upstream. Twenty signed-in
users chat in a hundred sessions (five each), text only, every message different; turns go
to each server in alternating blocks (`BENCH_CLUSTER_BLOCKS`, default 60, of 40 turns), the
same sessions in the same order on both, so this VM's drift hits both alike. Per setup and
turn:

- Redis round trips, as the client sees them: the runner's redis-py connections are
  counted from inside its process (`counted_app`, the runner's app under a wrapper that
  counts each `send_packed_command`, one network write answered by one read of replies:
  a pipeline or a script is one, a health-check PING or a connection's handshake is one
  more). On the cluster, each node's share of a fan-out is a write of its own; so writes
  that start while no other connection waits for a reply are counted apart, as the round
  trips a turn waits for in sequence (the turns run one at a time).
- Commands the client sends (each `pack_command`: a pipeline of 2 is 2).
- Redis's own counts, summed over the nodes (`INFO stats commandstats`, read before and
  after each block on a connection of the bench's own, its INFO taken out):
  `total_reads_processed` (read events on client sockets, which matches the client's round
  trips when each request arrives in one read) and `commandstats` calls (the commands
  executed, a script's inner calls included).
- Server B's CPU, from the kernel, per process (harness.cpu_ms).

Then a third runner on the cluster, with a key prefix of its own, opens 1,000 sessions for
100 users (a real first turn each, the server choosing the id), and each node's own client
counts the session hashes in its slots with SCAN.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness import cpu_ms, private_redis, save, stub_upstream, summary_ms
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.server_process import ServedApp, uvicorn_process
from tests.support.sign_in import SECRET, mint

BLOCKS = int(os.environ.get("BENCH_CLUSTER_BLOCKS", "60"))
TURNS_PER_BLOCK = 40
USERS = 20
SESSIONS_PER_USER = 5
SPREAD_USERS = 100
SPREAD_SESSIONS = 1000
LINE = "오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"
PERSONA = "밝은 바리스타 민지"
COUNTS_PATH = "/__bench/redis-sent"
SETUPS = ("single", "cluster")

# What the runner process has sent to Redis so far (counted_app's wrapper fills it).
_SENT = {"round_trips": 0, "sequential_round_trips": 0, "commands": 0}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def counted_app() -> ASGIApp:
    """The local runner's app (`local_runner.app:build_app`) in a process whose redis-py
    connections count what they send; `GET /__bench/redis-sent` answers the counts without
    reaching the app (or Redis). uvicorn serves it with `--factory`."""
    from redis.asyncio.connection import AbstractConnection

    from local_runner.app import build_app

    send_packed = AbstractConnection.send_packed_command
    pack = AbstractConnection.pack_command
    read = AbstractConnection.read_response
    waiting: set[AbstractConnection] = set()  # connections that sent and have no reply yet

    async def counted_send(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        _SENT["round_trips"] += 1
        if not waiting - {self}:
            _SENT["sequential_round_trips"] += 1
        waiting.add(self)
        await send_packed(self, *args, **kwargs)

    async def counted_read(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            return await read(self, *args, **kwargs)
        finally:
            waiting.discard(self)

    def counted_pack(self: AbstractConnection, *args: Any) -> list[bytes]:
        _SENT["commands"] += 1
        return pack(self, *args)

    AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    AbstractConnection.read_response = counted_read  # type: ignore[method-assign]
    AbstractConnection.pack_command = counted_pack  # type: ignore[method-assign]
    inner = build_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == COUNTS_PATH:
            body = json.dumps(_SENT).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    return app


@contextmanager
def counted_server_b(env: dict[str, str]) -> Iterator[ServedApp]:
    with uvicorn_process("bench.cluster_bench:counted_app", env, factory=True,
                         ready_path="/api/health") as served:
        yield served


@contextmanager
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """The tests' three-node cluster, without the append-only file (and its fsync on every
    write) that lets the tests restart a node with its keys: the single Redis has none."""
    with tempfile.TemporaryDirectory() as folder, RedisClusterNodes(Path(folder)) as nodes:
        for index in range(len(nodes.ports)):
            client = nodes.client(index)
            try:
                client.config_set("appendonly", "no")
            finally:
                client.close()
        yield nodes


@dataclass
class Setup:
    name: str
    served: ServedApp
    nodes: list[redis.Redis]
    """One plain client per Redis node (one for the single server), for INFO."""


def _sent(http: httpx.Client, served: ServedApp) -> dict[str, int]:
    response = http.get(served.base_url + COUNTS_PATH)
    response.raise_for_status()
    return {name: int(value) for name, value in response.json().items()}


def _redis_counts(nodes: list[redis.Redis]) -> dict[str, int]:
    """Summed over the nodes: read events, commands processed, and commandstats calls by
    command. Each node's reading is one `INFO stats commandstats`: one read, one command."""
    total: dict[str, int] = {}
    for node in nodes:
        info = node.info("stats", "commandstats")
        for name in ("total_reads_processed", "total_commands_processed"):
            total[name] = total.get(name, 0) + int(info[name])
        for name, value in info.items():
            if name.startswith("cmdstat_"):
                key = name.removeprefix("cmdstat_")
                total[key] = total.get(key, 0) + int(value["calls"])
    return total


def _turn(http: httpx.Client, served: ServedApp, token: str, session: str, n: int) -> float:
    started = time.perf_counter()
    response = http.post(f"{served.base_url}/api/chat", headers={"Authorization": f"Bearer {token}"},
                         json={"session_id": session, "persona": PERSONA, "max_tokens": 128,
                               "tts_enabled": False,
                               "messages": [{"role": "user", "content": f"{n}. {LINE}"}]})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def _block(http: httpx.Client, setup: Setup, sessions: list[tuple[str, str, str]], first_turn: int,
           latencies: list[float]) -> dict[str, float]:
    """One block of turns on one setup: per turn, CPU and what reached Redis. The counts
    are read outside the CPU readings, so reading them costs the block nothing."""
    sent_before, redis_before = _sent(http, setup.served), _redis_counts(setup.nodes)
    cpu_before = cpu_ms(setup.served.pid)
    for n in range(first_turn, first_turn + TURNS_PER_BLOCK):
        _, token, session = sessions[n % len(sessions)]
        latencies.append(_turn(http, setup.served, token, session, n))
    cpu_after = cpu_ms(setup.served.pid)
    redis_after, sent_after = _redis_counts(setup.nodes), _sent(http, setup.served)
    nodes = len(setup.nodes)
    executed = sum(redis_after[name] - redis_before.get(name, 0) for name in redis_after
                   if not name.startswith("total_") and name != "info")
    return {
        "cpu_ms": (cpu_after - cpu_before) / TURNS_PER_BLOCK,
        "round_trips": (sent_after["round_trips"] - sent_before["round_trips"]) / TURNS_PER_BLOCK,
        "sequential_round_trips": (sent_after["sequential_round_trips"]
                                   - sent_before["sequential_round_trips"]) / TURNS_PER_BLOCK,
        "commands_sent": (sent_after["commands"] - sent_before["commands"]) / TURNS_PER_BLOCK,
        # each node's second INFO is one read and its first one command inside the delta
        "redis_reads": (redis_after["total_reads_processed"] - redis_before["total_reads_processed"]
                        - nodes) / TURNS_PER_BLOCK,
        "redis_commands_processed": (redis_after["total_commands_processed"]
                                     - redis_before["total_commands_processed"] - nodes) / TURNS_PER_BLOCK,
        "redis_commands_executed": executed / TURNS_PER_BLOCK,
    }


def _commandstats_per_turn(before: dict[str, int], after: dict[str, int], turns: int) -> dict[str, float]:
    return {name: round((after[name] - before.get(name, 0)) / turns, 2) for name in sorted(after)
            if not name.startswith("total_") and name != "info" and after[name] > before.get(name, 0)}


def _summary(blocks: list[dict[str, float]], latencies: list[float]) -> dict[str, Any]:
    def mean(key: str) -> float:
        return round(statistics.fmean(block[key] for block in blocks), 2)

    cpu = [block["cpu_ms"] for block in blocks]
    return {"cpu_ms_per_turn": round(statistics.median(cpu), 3),
            "cpu_ms_blocks": [round(value, 3) for value in cpu],
            "round_trips_per_turn": mean("round_trips"),
            "round_trips_per_turn_blocks": sorted({round(block["round_trips"], 2) for block in blocks}),
            "sequential_round_trips_per_turn": mean("sequential_round_trips"),
            "commands_sent_per_turn": mean("commands_sent"),
            "redis_reads_per_turn": mean("redis_reads"),
            "redis_commands_processed_per_turn": mean("redis_commands_processed"),
            "redis_commands_executed_per_turn": mean("redis_commands_executed"),
            "latency": summary_ms(latencies)}


def _users(count: int, prefix: str) -> list[tuple[str, str]]:
    """(user id, bearer token valid for an hour) of `count` users."""
    expires = int(time.time()) + 3600
    return [(f"{prefix}-{n}", mint({"sub": f"{prefix}-{n}", "exp": expires})) for n in range(count)]


def _split_turns(node: redis.Redis, prefix: str, sessions: list[tuple[str, str, str]], turns: int) -> float:
    """The share of `turns` whose user's keys and session's keys lie on different nodes:
    the read of the session's metadata with the user's persona (one pipeline) is then one
    write to each node, sent side by side."""
    from redis.crc import key_slot

    from roleplay.core.redis_keys import RedisKeys
    from roleplay.sessions.scope import storage_id

    owner: dict[int, int] = {}
    for start, end, holder, *_ in node.cluster("slots"):
        owner.update(dict.fromkeys(range(int(start), int(end) + 1), int(holder[1])))
    keys = RedisKeys(prefix)

    def split(n: int) -> bool:
        user, _, session = sessions[n % len(sessions)]
        persona, meta = keys.user_persona(user), keys.session(storage_id(user, session))
        return owner[key_slot(persona.encode())] != owner[key_slot(meta.encode())]

    return sum(split(n) for n in range(turns)) / turns


def _side_by_side(http: httpx.Client, setups: dict[str, Setup], prefix: str) -> dict[str, Any]:
    users = _users(USERS, "chat-user")
    sessions = [(*users[n % USERS], f"chat-{n}") for n in range(USERS * SESSIONS_PER_USER)]
    for setup in setups.values():  # opens every session, its connections and scripts
        for n, (_, token, session) in enumerate(sessions):
            _turn(http, setup.served, token, session, -1 - n)
    blocks: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
    latencies: dict[str, list[float]] = {name: [] for name in setups}
    stats_before = {name: _redis_counts(setup.nodes) for name, setup in setups.items()}
    for block in range(BLOCKS):
        for name in (SETUPS if block % 2 else SETUPS[::-1]):
            blocks[name].append(_block(http, setups[name], sessions, block * TURNS_PER_BLOCK,
                                       latencies[name]))
    stats_after = {name: _redis_counts(setup.nodes) for name, setup in setups.items()}
    turns = BLOCKS * TURNS_PER_BLOCK
    result = {name: {**_summary(blocks[name], latencies[name]),
                     "redis_commandstats_per_turn": _commandstats_per_turn(
                         stats_before[name], stats_after[name], turns)}
              for name in setups}
    single, cluster = result["single"], result["cluster"]
    return {**result,
            "extra_round_trips_per_turn": round(cluster["round_trips_per_turn"]
                                                - single["round_trips_per_turn"], 2),
            "cpu_change": round(cluster["cpu_ms_per_turn"] / single["cpu_ms_per_turn"] - 1, 3),
            # each cluster block against the single block next to it in time
            "cpu_change_paired_blocks_median": round(statistics.median(
                b["cpu_ms"] / a["cpu_ms"] - 1 for a, b in zip(blocks["single"], blocks["cluster"],
                                                              strict=True)), 3),
            "turns_with_user_and_session_on_two_nodes": round(
                _split_turns(setups["cluster"].nodes[0], prefix, sessions, turns), 3)}


SESSION_HASH = re.compile(r"session:\{s[0-9a-f]+\}$")


def _spread(http: httpx.Client, served: ServedApp, nodes: RedisClusterNodes, prefix: str) -> dict[str, Any]:
    """1,000 sessions of 100 users, each opened by a first turn with no session id (the
    server makes one), then the session hashes each node holds, by SCAN on that node."""
    tokens = [token for _, token in _users(SPREAD_USERS, "spread-user")]
    started = time.monotonic()
    for n in range(SPREAD_SESSIONS):
        response = http.post(f"{served.base_url}/api/chat",
                             headers={"Authorization": f"Bearer {tokens[n % SPREAD_USERS]}"},
                             json={"persona": PERSONA, "max_tokens": 128, "tts_enabled": False,
                                   "messages": [{"role": "user", "content": f"{n}. {LINE}"}]})
        response.raise_for_status()
    took = time.monotonic() - started
    per_node: list[dict[str, Any]] = []
    for index, port in enumerate(nodes.ports):
        client = nodes.client(index)
        try:
            keys = [key for key in client.scan_iter(f"{prefix}session:*", count=1000)
                    if SESSION_HASH.search(key)]
            types = {str(client.type(key)) for key in keys}
            slots = [(int(start), int(end)) for start, end, node, *_ in client.cluster("slots")
                     if int(node[1]) == port]
        finally:
            client.close()
        assert types <= {"hash"}, types
        per_node.append({"port": port, "slots": slots, "sessions": len(keys)})
    total = sum(node["sessions"] for node in per_node)
    assert total == SPREAD_SESSIONS, per_node
    for node in per_node:
        node["share"] = round(node["sessions"] / total, 3)
    return {"users": SPREAD_USERS, "sessions": total, "seconds": round(took, 1), "nodes": per_node,
            "max_share": max(node["share"] for node in per_node)}


def run() -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    with (private_redis() as single_url, redis_cluster() as nodes, stub_upstream() as (upstream, _),
          ExitStack() as stack, httpx.Client(timeout=30) as http):
        base = {"LLM_BASE_URL": upstream, "MAX_CONCURRENT_USERS": "1000", "JWT_SECRET": SECRET,
                "LOG_REQUESTS": "1", "METRICS_ENABLED": "1"}
        urls = {"single": single_url, "cluster": nodes.url}
        prefix = f"bench-cluster-{tag}:"
        setups: dict[str, Setup] = {}
        for name in SETUPS:
            served = stack.enter_context(counted_server_b(
                {**base, "REDIS_URL": urls[name], "REDIS_KEY_PREFIX": prefix}))
            clients = ([redis.Redis.from_url(single_url, decode_responses=True)] if name == "single"
                       else [nodes.client(index) for index in range(len(nodes.ports))])
            for client in clients:
                stack.callback(client.close)
            setups[name] = Setup(name, served, clients)
        side_by_side = _side_by_side(http, setups, prefix)
        spread_prefix = f"bench-spread-{tag}:"
        with counted_server_b({**base, "REDIS_URL": nodes.url, "REDIS_KEY_PREFIX": spread_prefix}) as served:
            spread = _spread(http, served, nodes, spread_prefix)
    result = {
        "setup": {"blocks": BLOCKS, "turns_per_block": TURNS_PER_BLOCK, "users": USERS,
                  "sessions": USERS * SESSIONS_PER_USER, "cluster_nodes": len(nodes.ports),
                  "goals": {"round_trips": "at most 1 more per turn on the cluster",
                            "cpu": "Server B CPU per turn at most 10% above one Redis's",
                            "spread": "no shard holds more than 45% of 1,000 sessions of 100 users"},
                  "counted": {
                      "round_trips": "writes of the runner's redis-py connections (send_packed_command)"
                                     ", counted in its process: a pipeline or script is 1",
                      "sequential_round_trips": "those writes that start while no other connection "
                                                "waits for a reply: the waits a turn pays in sequence",
                      "commands_sent": "commands the runner packs (pack_command): a pipeline of 2 is 2",
                      "redis_reads": "INFO stats total_reads_processed delta, summed over nodes, "
                                     "the bench's INFO taken out",
                      "redis_commands_processed": "INFO stats total_commands_processed delta, summed "
                                                  "over nodes, the bench's INFO taken out",
                      "redis_commands_executed": "INFO commandstats calls delta, summed over nodes, "
                                                 "scripts' inner calls included, INFO taken out"}},
        **side_by_side,
        "spread": spread,
    }
    save("cluster", result)
    return result


if __name__ == "__main__":
    run()

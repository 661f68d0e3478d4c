import asyncio
import os

from fastapi.testclient import TestClient

from roleplay.core.loop_bound import LoopBoundClient
from roleplay.core.redis_client import get_redis, redis_holder


class Recorder:
    def __init__(self) -> None:
        self.opened: list[object] = []
        self.closed: list[object] = []

    def open(self) -> object:
        client = object()
        self.opened.append(client)
        return client

    async def close(self, client: object) -> None:
        self.closed.append(client)


def test_same_loop_gets_the_same_client() -> None:
    recorder = Recorder()
    holder = LoopBoundClient(recorder.open, recorder.close)

    async def twice() -> tuple[object, object]:
        return await holder.get(), await holder.get()

    first, second = asyncio.run(twice())
    assert first is second
    assert len(recorder.opened) == 1


def test_new_loop_gets_a_new_client_and_the_old_one_is_closed() -> None:
    recorder = Recorder()
    holder = LoopBoundClient(recorder.open, recorder.close)
    first = asyncio.run(holder.get())
    assert recorder.closed == [first]
    second = asyncio.run(holder.get())
    assert second is not first
    assert recorder.closed == [first, second]


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            continue
    return count


def test_redis_client_survives_many_loops_without_leaking_sockets() -> None:
    async def ping() -> bool:
        return bool(await (await get_redis()).ping())

    assert asyncio.run(ping())
    before = _open_sockets()
    for _ in range(5):
        assert asyncio.run(ping())
    assert _open_sockets() <= before


def test_redis_works_across_two_testclient_blocks(client: TestClient) -> None:
    from local_runner.app import build_app

    assert client.get("/api/health").status_code == 200
    for _ in range(2):
        with TestClient(build_app()) as other:
            assert other.get("/api/health").json()["data"]["checks"]["redis"]["status"] == "ok"
    assert redis_holder is not None


def test_a_loop_that_comes_back_finds_its_client_again() -> None:
    recorder = Recorder()
    holder = LoopBoundClient(recorder.open, recorder.close)
    long_lived = asyncio.new_event_loop()
    try:
        first = long_lived.run_until_complete(holder.get())
        asyncio.run(holder.get())
        assert long_lived.run_until_complete(holder.get()) is first
        assert len(recorder.opened) == 2
    finally:
        long_lived.run_until_complete(long_lived.shutdown_asyncgens())
        long_lived.close()
    assert first in recorder.closed

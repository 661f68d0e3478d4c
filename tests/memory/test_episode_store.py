"""The episodes' storage rules, on a real Redis: written with the summary, bounded,
noted when recalled, dropped by rewinds, forgotten on request, fenced vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.memory.episode_maker import make_episodes
from roleplay.sessions.episode_store import EpisodeStore
from roleplay.sessions.store import SessionStore, StoredMessage, TurnSetup


def _messages(count: int) -> list[StoredMessage]:
    return [StoredMessage(role="user" if n % 2 == 0 else "assistant",
                          content=f"message {n} about the garden", id=f"m{n}", at=0) for n in range(count)]


async def _session(sid: str, count: int) -> SessionStore:
    store = SessionStore()
    for message in _messages(count):
        turn = await store.begin_turn(sid, [message], token="t", client_ids=[None],
                                      setup=TurnSetup(owner="u-1", character_id=None, persona=None,
                                                      scenario=None),
                                      setup_changed=True, idempotency_key=None)
        await store.end_turn(turn)  # type: ignore[arg-type]
    return store


async def _fold(store: SessionStore, sid: str, expected: int, upto: int) -> bool:
    meta = await store.load_meta(sid)
    assert meta is not None
    stretch = (await store.transcript(sid))[expected + 1:upto + 1]
    episodes = make_episodes(stretch, expected + 1, settings=get_settings(), character_name=None,
                             language="en")
    return await store.save_summary(sid, expected_upto=expected, upto=upto, summary="s", tokens=1,
                                    epoch=meta.epoch, episodes=[e.model_dump_json() for e in episodes])


def test_a_summary_pass_stores_its_episodes_and_moves_the_memory_revision(
        settings_env: Callable[..., None]) -> None:
    settings_env(EPISODE_MESSAGES="2")

    async def run() -> None:
        store = await _session("es-save", 12)
        assert (await store.read_window("es-save")).memory_rev == 0
        assert await _fold(store, "es-save", -1, 5)
        window = await store.read_window("es-save")
        episodes = await EpisodeStore().read_all("es-save")
        assert [e.episode.id for e in episodes] == ["e0-1", "e2-3", "e4-5"]
        assert window.memory_rev > 0
        assert (await store.load_meta("es-save")).episodes == 3  # type: ignore[union-attr]
        assert await _fold(store, "es-save", 5, 9)
        assert len(await EpisodeStore().read_all("es-save")) == 5
        assert (await store.read_window("es-save")).memory_rev > window.memory_rev

    asyncio.run(run())


def test_past_max_episodes_the_oldest_go_first(settings_env: Callable[..., None]) -> None:
    settings_env(EPISODE_MESSAGES="1", MAX_EPISODES="3")

    async def run() -> None:
        store = await _session("es-bound", 10)
        assert await _fold(store, "es-bound", -1, 5)
        ids = [e.episode.id for e in await EpisodeStore().read_all("es-bound")]
        assert ids == ["e3-3", "e4-4", "e5-5"]
        assert (await store.load_meta("es-bound")).episodes == 3  # type: ignore[union-attr]

    asyncio.run(run())


def test_a_stale_summary_stores_no_episodes(settings_env: Callable[..., None]) -> None:
    async def run() -> None:
        store = await _session("es-stale", 8)
        assert await _fold(store, "es-stale", -1, 3)
        before = await EpisodeStore().read_all("es-stale")
        assert not await _fold(store, "es-stale", -1, 5), "the watermark had moved"
        assert await EpisodeStore().read_all("es-stale") == before

    asyncio.run(run())


def test_a_rewind_below_the_watermark_drops_the_episodes_reaching_it(
        settings_env: Callable[..., None]) -> None:
    settings_env(EPISODE_MESSAGES="2")

    async def run() -> None:
        store = await _session("es-rewind", 12)
        assert await _fold(store, "es-rewind", -1, 7)
        assert await store.rewind_to("es-rewind", 3) == 9
        assert [e.episode.id for e in await EpisodeStore().read_all("es-rewind")] == ["e0-1"]
        assert (await store.load_meta("es-rewind")).episodes == 1  # type: ignore[union-attr]

    asyncio.run(run())


def test_forgetting_an_episode_removes_it_with_its_vector_and_recall_time(
        settings_env: Callable[..., None], sync_redis: object) -> None:
    settings_env(EPISODE_MESSAGES="2")

    async def run() -> None:
        store = await _session("es-forget", 8)
        assert await _fold(store, "es-forget", -1, 3)
        episodes = EpisodeStore()
        first = (await episodes.read_all("es-forget"))[0]
        assert await episodes.save_vectors("es-forget", [(first, [0.6, 0.8])]) == 1
        assert (await episodes.read_all("es-forget"))[0].vector is not None
        assert await episodes.delete("es-forget", first.episode.id)
        assert not await episodes.delete("es-forget", first.episode.id)
        assert [e.episode.id for e in await episodes.read_all("es-forget")] == ["e2-3"]

    asyncio.run(run())
    fields = sync_redis.hkeys(redis_keys().session_episodes("es-forget"))  # type: ignore[attr-defined]
    assert sorted(f.decode() if isinstance(f, bytes) else f for f in fields) == ["e2-3"]


def test_a_vector_for_an_episode_rebuilt_meanwhile_is_dropped(settings_env: Callable[..., None]) -> None:
    settings_env(EPISODE_MESSAGES="2")

    async def run() -> None:
        store = await _session("es-fence", 8)
        assert await _fold(store, "es-fence", -1, 3)
        episodes = EpisodeStore()
        old = (await episodes.read_all("es-fence"))[0]
        await store.rewind_to("es-fence", 0)
        assert await episodes.save_vectors("es-fence", [(old, [1.0, 0.0])]) == 0

    asyncio.run(run())


def test_the_episodes_expire_with_their_session(settings_env: Callable[..., None],
                                                sync_redis: object) -> None:
    async def run() -> None:
        store = await _session("es-ttl", 8)
        assert await _fold(store, "es-ttl", -1, 3)

    asyncio.run(run())
    ttl = sync_redis.ttl(redis_keys().session_episodes("es-ttl"))  # type: ignore[attr-defined]
    assert 0 < ttl <= get_settings().conversation_ttl_s


def test_deleting_the_session_deletes_its_episodes(settings_env: Callable[..., None],
                                                   sync_redis: object) -> None:
    async def run() -> None:
        store = await _session("es-delete", 8)
        assert await _fold(store, "es-delete", -1, 3)
        assert await store.delete("es-delete")

    asyncio.run(run())
    assert not sync_redis.exists(redis_keys().session_episodes("es-delete"))  # type: ignore[attr-defined]

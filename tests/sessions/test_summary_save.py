"""The summary's save is a compare-and-set on the watermark as well as on the epoch: two
summarizers that read the same watermark (a turn's request-path summary and the
background summarizer) must not both land, even when no rewind moved the epoch between
them. On real Redis, through `SessionStore` itself."""

from __future__ import annotations

import asyncio

from roleplay.sessions.store import SessionMeta, SessionStore, StoredMessage, Turn, TurnSetup, now


async def _session_of_six(store: SessionStore, session_id: str) -> SessionMeta:
    """A stored session of six messages (one turn's begin with all of them, then its end)."""
    messages = [StoredMessage(id=f"m-{n}", role="user" if n % 2 == 0 else "assistant",
                              content=f"msg-{n}", at=now()) for n in range(6)]
    turn = await store.begin_turn(
        session_id, messages, token="t-1", client_ids=[None] * len(messages),
        setup=TurnSetup(owner="u-1", character_id=None, persona=None, scenario=None),
        setup_changed=True, idempotency_key=None)
    assert isinstance(turn, Turn) and turn.window.length == 6
    await store.end_turn(turn)
    meta = await store.load_meta(session_id)
    assert meta is not None and meta.summary_upto == -1
    return meta


def test_a_summary_saved_against_a_stale_watermark_is_refused_and_changes_nothing() -> None:
    async def scenario() -> None:
        store = SessionStore()
        meta = await _session_of_six(store, "s-stale-watermark")
        # The first summarizer read watermark -1 and covers messages 0..1.
        assert await store.save_summary(meta.session_id, expected_upto=-1, upto=1,
                                        summary="first summary", tokens=2, epoch=meta.epoch)
        saved = await store.load_meta(meta.session_id)
        assert saved is not None and (saved.summary, saved.summary_upto) == ("first summary", 1)
        assert saved.epoch == meta.epoch, "no rewind: the epoch alone cannot tell them apart"

        # The second one read the same watermark -1 before the first saved; same epoch.
        stale = await store.save_summary(meta.session_id, expected_upto=-1, upto=3,
                                         summary="stale summary", tokens=2, epoch=meta.epoch)

        assert stale is False
        after = await store.load_meta(meta.session_id)
        assert after is not None
        assert (after.summary, after.summary_upto, after.summary_tokens) == ("first summary", 1, 2)
        assert after.summary_at == saved.summary_at
        assert (await store.read_window(meta.session_id)).watermark == 1

    asyncio.run(scenario())


def test_a_summary_saved_against_the_current_watermark_moves_it() -> None:
    """The same save as above, from the watermark the first one left: accepted (so the
    refusal above is the watermark's doing, not the arguments')."""
    async def scenario() -> None:
        store = SessionStore()
        meta = await _session_of_six(store, "s-current-watermark")
        assert await store.save_summary(meta.session_id, expected_upto=-1, upto=1,
                                        summary="first summary", tokens=2, epoch=meta.epoch)
        assert await store.save_summary(meta.session_id, expected_upto=1, upto=3,
                                        summary="second summary", tokens=2, epoch=meta.epoch)
        after = await store.load_meta(meta.session_id)
        assert after is not None and (after.summary, after.summary_upto) == ("second summary", 3)

    asyncio.run(scenario())

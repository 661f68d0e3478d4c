"""The copies of sessions' lookups a process keeps (`sessions.known_lookups`) stay bounded
by count and by the stored text they hold, and answer only for the keys they read."""

from __future__ import annotations

import pytest

from roleplay.sessions import known_lookups
from roleplay.sessions.known_lookups import KnownLookups
from roleplay.sessions.scope import ScopedSession, SessionLookup
from roleplay.sessions.store import SessionMeta, lookup_guard


@pytest.fixture(autouse=True)
def one_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on one Redis server, whatever store the run uses."""
    monkeypatch.setattr(known_lookups, "is_cluster", lambda: False)


def _lookup(session_id: str, persona: str = "밝은 바리스타", card: str | None = None) -> SessionLookup:
    fields = {"owner": "u1", "persona": persona}
    return SessionLookup(ScopedSession(session_id, f"s-{session_id}"),
                         SessionMeta(session_id=f"s-{session_id}", owner="u1", persona=persona),
                         [card], None, fields)


def test_a_copy_answers_for_the_keys_its_lookup_read_beside_the_session() -> None:
    known = KnownLookups()
    known.remember("u1", _lookup("a", card="{}"), ["card-key"])
    copy = known.get("u1", "a", ["card-key"])
    assert copy is not None
    assert copy.guard.keys == ("card-key",)
    assert copy.guard.digest == lookup_guard({"owner": "u1", "persona": "밝은 바리스타"}, ["{}"])
    assert known.get("u1", "a", ["another-key"]) is None
    assert known.get("u2", "a", ["card-key"]) is None
    assert known.get("u1", None, ["card-key"]) is None


def test_a_lookup_that_found_no_session_as_it_stands_is_not_kept() -> None:
    known = KnownLookups()
    brought_back = _lookup("a")._replace(fields=None)
    known.remember("u1", brought_back, [])
    assert known.get("u1", "a", []) is None


def test_copies_past_their_stored_text_budget_go_least_recently_used_first() -> None:
    known = KnownLookups(characters=100)
    card = "x" * 40
    for session_id in ("a", "b"):
        known.remember("u1", _lookup(session_id, persona="p", card=card), ["k"])
    assert known.get("u1", "a", ["k"]) is not None  # now the most recently used
    known.remember("u1", _lookup("c", persona="p", card=card), ["k"])
    assert known.get("u1", "b", ["k"]) is None
    assert known.get("u1", "a", ["k"]) is not None and known.get("u1", "c", ["k"]) is not None
    known.remember("u1", _lookup("huge", card="x" * 101), ["k"])
    assert known.get("u1", "huge", ["k"]) is None, "one copy larger than the budget is not kept"


def test_copies_past_their_count_go_least_recently_used_first() -> None:
    known = KnownLookups(limit=2)
    for session_id in ("a", "b", "c"):
        known.remember("u1", _lookup(session_id), [])
    assert [known.get("u1", s, []) is not None for s in ("a", "b", "c")] == [False, True, True]


def test_a_copy_remembered_again_replaces_the_old_one() -> None:
    known = KnownLookups(characters=100)
    for persona in ("p" * 30, "q" * 30, "r" * 30):
        known.remember("u1", _lookup("a", persona=persona), [])
    copy = known.get("u1", "a", [])
    assert copy is not None and copy.lookup.fields == {"owner": "u1", "persona": "r" * 30}
    known.forget("u1", "a")
    assert known.get("u1", "a", []) is None


def test_on_a_cluster_no_copy_is_kept_or_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard reads the persona's and the character's keys, which lie on other shards."""
    known = KnownLookups()
    known.remember("u1", _lookup("a"), [])
    monkeypatch.setattr(known_lookups, "is_cluster", lambda: True)
    assert known.get("u1", "a", []) is None
    known.remember("u1", _lookup("b"), [])
    monkeypatch.setattr(known_lookups, "is_cluster", lambda: False)
    assert known.get("u1", "b", []) is None

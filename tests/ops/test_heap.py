"""A process freezes its startup heap once, after its first answered request, so full
collections of the cyclic garbage collector stop walking what lives as long as it."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from roleplay.ops import heap
from roleplay.web.function_app import create_function_app


@pytest.fixture
def freezes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The process not frozen yet, and a count of `gc.freeze` calls instead of real ones."""
    calls: list[int] = []  # 1: a freeze, 2: thresholds set
    monkeypatch.setattr(heap, "_frozen", [])
    monkeypatch.setattr(heap.gc, "freeze", lambda: calls.append(1))
    monkeypatch.setattr(heap.gc, "set_threshold", lambda *t: calls.append(2))
    return calls


def _app() -> TestClient:
    router = APIRouter()

    @router.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"frozen": bool(heap._frozen)}

    return TestClient(create_function_app("heap", [router]))


def test_the_first_answered_request_freezes_the_heap_once(freezes: list[int]) -> None:
    with _app() as client:
        assert freezes == []
        assert client.get("/ping").json() == {"frozen": False}
        assert freezes == [1, 2]
        assert client.get("/ping").json() == {"frozen": True}
        assert client.get("/missing").status_code == 404
    assert freezes == [1, 2]


def test_a_frozen_process_collects_young_objects_past_what_turns_in_flight_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_frozen", [])
    monkeypatch.setattr(heap.gc, "freeze", lambda: None)
    before = heap.gc.get_threshold()
    try:
        heap.freeze_startup_heap()
        assert heap.gc.get_threshold() == (heap.YOUNG_THRESHOLD, *heap.OLDER_THRESHOLDS)
    finally:
        heap.gc.set_threshold(*before)


def test_a_failed_first_request_freezes_too(freezes: list[int]) -> None:
    with _app() as client:
        assert client.get("/missing").status_code == 404
    assert freezes == [1, 2]


def test_every_app_of_a_process_shares_the_one_freeze(freezes: list[int]) -> None:
    with _app() as first, _app() as second:
        first.get("/ping")
        second.get("/missing")
    assert freezes == [1, 2]


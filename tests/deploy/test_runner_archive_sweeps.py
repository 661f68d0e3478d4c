"""The local runner archives idle conversations itself, every ARCHIVE_EVERY_S, as the
deployed stack's schedule does through the summarizer function (issue 31)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

import anyio
import pytest
from fastapi.testclient import TestClient

from local_runner.app import build_app
from roleplay.sessions import conversation_archive

EVERY_S = 0.05


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_runner_sweeps_every_archive_every_s_keeps_going_after_a_failed_sweep_and_stops_with_the_app(
        settings_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    async def sweep_idle() -> dict[str, int]:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("the cold store went away")
        return {"archived": 1, "expired": 0, "skipped": 0, "failed": 0}

    monkeypatch.setattr(conversation_archive, "sweep_idle", sweep_idle)
    settings_env(ARCHIVE_EVERY_S=str(EVERY_S))
    caplog.set_level(logging.INFO, logger="local_runner.archive_sweeps")
    with TestClient(build_app()) as client:
        _wait_for(lambda: len(calls) >= 4)
        assert client.get("/api/health").status_code == 200, "the app serves meanwhile"
    stopped_at = len(calls)
    time.sleep(EVERY_S * 4)
    assert len(calls) == stopped_at, "no sweep after shutdown"
    assert all(later - earlier >= EVERY_S * 0.9 for earlier, later in itertools.pairwise(calls))
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and "the cold store went away" in (failures[0].exc_text or "")
    assert any("'archived': 1" in r.getMessage() for r in caplog.records)


def test_shutting_down_does_not_wait_for_a_sweep_under_way(
        settings_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[float] = []

    async def slow_sweep() -> dict[str, int]:
        started.append(time.monotonic())
        await anyio.sleep(60)
        return {}

    monkeypatch.setattr(conversation_archive, "sweep_idle", slow_sweep)
    settings_env(ARCHIVE_EVERY_S=str(EVERY_S))
    with TestClient(build_app()):
        _wait_for(lambda: bool(started))
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5


def test_the_default_period_sweeps_nothing_while_an_app_starts_and_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    async def sweep_idle() -> dict[str, int]:
        calls.append(1)
        return {}

    monkeypatch.setattr(conversation_archive, "sweep_idle", sweep_idle)
    with TestClient(build_app()) as client:
        assert client.get("/api/health").status_code == 200
    assert calls == []

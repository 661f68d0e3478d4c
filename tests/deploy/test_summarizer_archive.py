"""The summarizer function's scheduled event, `{"kind": "archive"}`, runs one sweep of idle
conversations (issue 31); its summary events are answered as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from functions.summarizer.app import handler
from roleplay.sessions import conversation_archive

COUNTS = {"archived": 2, "expired": 1, "skipped": 0, "failed": 0}


def test_an_archive_event_runs_one_sweep_and_answers_its_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def sweep_idle() -> dict[str, int]:
        loops.append(asyncio.get_running_loop())
        return COUNTS

    monkeypatch.setattr(conversation_archive, "sweep_idle", sweep_idle)
    assert handler({"kind": "archive"}, None) == {"kind": "archive", **COUNTS}
    assert handler({"kind": "archive"}, None) == {"kind": "archive", **COUNTS}
    assert len(loops) == 2 and loops[0] is loops[1], "one loop per container, as summaries use"


def test_the_archive_answer_carries_every_count_the_sweep_reports(
        settings_env: Callable[..., None], tmp_path: Path) -> None:
    settings_env(DATA_DIR=str(tmp_path), CONVERSATION_BUCKET="")
    answer = handler({"kind": "archive"}, None)
    assert answer["kind"] == "archive"
    assert {"archived", "expired", "skipped", "failed"} <= set(answer)


def test_a_sweep_that_fails_fails_the_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    async def sweep_idle() -> dict[str, int]:
        raise ConnectionError("the cache is unreachable")

    monkeypatch.setattr(conversation_archive, "sweep_idle", sweep_idle)
    with pytest.raises(ConnectionError):
        handler({"kind": "archive"}, None)


def test_other_kinds_are_still_refused_and_never_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def sweep_idle() -> dict[str, int]:
        raise AssertionError("swept")

    monkeypatch.setattr(conversation_archive, "sweep_idle", sweep_idle)
    for event in ({"kind": "other"}, {"kind": "Archive"}, {"kind": ["archive"]}, "archive", None):
        assert handler(event, None)["outcome"] == "invalid_event"

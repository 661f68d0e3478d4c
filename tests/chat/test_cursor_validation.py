"""The cursors of the paged routes: any value a client sends is a page or a 400, never a 500.

On main a `cursor` of thirty nines on a session's messages page was a 500 (Redis refuses a
range bound past 64 bits), and so was `²` (`str.isdigit` takes it, `int` does not).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.fake_llm import FakeLLM

HOSTILE = ["9" * 30, "9223372036854775807", "9223372036854775760", "18446744073709551616",
           "4294967296", "²", "٣", "-1", "1e3", " 1", "1\n", "0x10", "", "9" * 5000]


@pytest.fixture
def served() -> Iterator[TestClient]:
    """The runner, answering a server error as a 500 instead of raising it into the test."""
    from local_runner.app import build_app

    with TestClient(build_app(), raise_server_exceptions=False) as client:
        yield client


def _session(client: TestClient, turns: int) -> str:
    session_id = "s-paged"
    for n in range(turns):
        answer = client.post("/api/chat", json={"session_id": session_id, "tts_enabled": False,
                                                "messages": [{"role": "user", "content": f"m{n}"}]})
        assert answer.status_code == 200, answer.text
    return session_id


@pytest.mark.parametrize("cursor", HOSTILE)
def test_a_messages_cursor_not_handed_out_is_400_bad_cursor(
        fake_upstream: FakeLLM, served: TestClient, cursor: str) -> None:
    session_id = _session(served, 1)
    answer = served.get(f"/api/chat/sessions/{session_id}/messages", params={"cursor": cursor})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_cursor"


def test_the_cursors_a_page_hands_out_page_through_the_whole_transcript(
        fake_upstream: FakeLLM, served: TestClient) -> None:
    session_id = _session(served, 3)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor is not None else {})
        page = served.get(f"/api/chat/sessions/{session_id}/messages", params=params)
        assert page.status_code == 200, page.text
        seen += [m["content"] for m in page.json()["data"]["messages"]]
        cursor = page.json()["data"]["next_cursor"]
        if cursor is None:
            break
    assert seen == ["m0", fake_upstream.reply, "m1", fake_upstream.reply, "m2", fake_upstream.reply]


@pytest.mark.parametrize("cursor", ["6", "4294967295", "0000000000"])
def test_a_cursor_at_or_past_the_end_is_an_empty_last_page(
        fake_upstream: FakeLLM, served: TestClient, cursor: str) -> None:
    """A transcript rewound after a page was read leaves its cursor past the end: no error."""
    session_id = _session(served, 3)
    page = served.get(f"/api/chat/sessions/{session_id}/messages", params={"cursor": cursor})
    assert page.status_code == 200, page.text
    data = page.json()["data"]
    assert data["total"] == 6
    if cursor != "0000000000":
        assert data["messages"] == [] and data["next_cursor"] is None


def test_a_bad_cursor_on_another_clients_session_is_still_404(
        fake_upstream: FakeLLM, served: TestClient) -> None:
    """The cursor is checked before the session is read: a 400 says nothing about whether
    a session exists, and a good cursor on a session the caller lacks stays 404."""
    assert served.get("/api/chat/sessions/nobody/messages",
                      params={"cursor": "9" * 30}).status_code == 400
    missing = served.get("/api/chat/sessions/nobody/messages", params={"cursor": "2"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "session_not_found"


@pytest.mark.parametrize("cursor", [*HOSTILE, "٠" * 13 + ":a", "0000000000000:a\n", "\x00"])
def test_a_characters_cursor_is_never_a_server_error(served: TestClient, cursor: str) -> None:
    """The other paged route (its store checks the cursor's shape before Redis sees it)."""
    answer = served.get("/api/characters", params={"cursor": cursor[:512]})
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["code"] == "invalid_cursor"

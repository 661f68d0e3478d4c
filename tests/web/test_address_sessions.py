"""A session made without a cookie is filed under the address; once a cookie reaches it
(the browser that made it, back with the cookie it was given) it is that cookie's alone.
Over real HTTP (uvicorn) on real Redis: `httpx.get/post` is a cookie-less curl, an
`httpx.Client` (which keeps cookies) a browser; all of them come from 127.0.0.1.

On main every cookie-less client of the address, and every other browser behind it,
could read the browser's conversation (and write into it) by its id.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from roleplay.core.redis_keys import redis_keys
from roleplay.sessions.scope import ADDRESS_FILED
from tests.support.fake_llm import FakeLLM


@pytest.fixture
def server_b(fake_upstream: FakeLLM) -> Iterator[str]:
    from local_runner.app import build_app
    from tests.support.upstream_server import serve

    with serve(build_app()) as url:
        yield url


def _body(session_id: str | None, content: str) -> dict[str, object]:
    body: dict[str, object] = {"tts_enabled": False, "messages": [{"role": "user", "content": content}]}
    if session_id is not None:
        body["session_id"] = session_id
    return body


def _said(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [m["content"] for m in answer.json()["data"]["messages"] if m["role"] == "user"]


def test_a_browsers_first_session_is_its_cookies_alone_once_the_cookie_comes_back(
        server_b: str) -> None:
    with httpx.Client(base_url=server_b, timeout=30) as browser, \
            httpx.Client(base_url=server_b, timeout=30) as neighbour:
        first = browser.post("/api/chat", json=_body(None, "처음"))
        assert first.status_code == 200 and browser.cookies.get("rp_anon")
        session_id = first.json()["data"]["session_id"]
        assert session_id.startswith(ADDRESS_FILED), "made before the cookie: filed under the address"
        assert browser.post("/api/chat", json=_body(session_id, "비밀")).status_code == 200

        read = httpx.get(f"{server_b}/api/chat/sessions/{session_id}", timeout=30)
        assert read.status_code == 404, "on main a curl from the address read the conversation"
        assert read.json()["error"]["code"] == "session_not_found"
        wrote = httpx.post(f"{server_b}/api/chat", json=_body(session_id, "끼어들기"), timeout=30)
        assert wrote.status_code == 404, "nor may it write into it"
        for path in ("", "/messages", "/memories", "/export"):
            assert httpx.get(f"{server_b}/api/chat/sessions/{session_id}{path}",
                             timeout=30).status_code == 404, path
        assert httpx.delete(f"{server_b}/api/chat/sessions/{session_id}", timeout=30).status_code == 404

        neighbour.get("/api/chat/sessions/first-contact")
        assert neighbour.get(f"/api/chat/sessions/{session_id}").status_code == 404, \
            "another browser behind the same address cannot either"

        assert _said(browser.get(f"/api/chat/sessions/{session_id}")) == ["처음", "비밀"]


def test_a_browser_binds_its_first_session_by_reading_it(server_b: str) -> None:
    """Reading is enough: the conversation is the cookie's from its first use with it."""
    with httpx.Client(base_url=server_b, timeout=30) as browser:
        session_id = browser.post("/api/chat", json=_body(None, "처음")).json()["data"]["session_id"]
        assert _said(browser.get(f"/api/chat/sessions/{session_id}")) == ["처음"]
    assert httpx.get(f"{server_b}/api/chat/sessions/{session_id}", timeout=30).status_code == 404


def test_cookieless_clients_of_an_address_keep_sharing_what_no_cookie_bound(
        server_b: str, sync_redis: redis.Redis) -> None:
    """Curls are one user per address by design: their sessions stay theirs (and the
    README's curl conversation goes on)."""
    made = httpx.post(f"{server_b}/api/chat", json=_body(None, "one"), timeout=30)
    session_id = made.json()["data"]["session_id"]
    assert httpx.post(f"{server_b}/api/chat", json=_body(session_id, "two"), timeout=30).status_code == 200
    assert _said(httpx.get(f"{server_b}/api/chat/sessions/{session_id}", timeout=30)) == ["one", "two"]
    assert len(sync_redis.zrange(redis_keys().active_users, 0, -1)) == 1


def test_an_address_session_goes_to_the_first_cookie_only(server_b: str) -> None:
    with httpx.Client(base_url=server_b, timeout=30) as first, \
            httpx.Client(base_url=server_b, timeout=30) as second:
        assert httpx.post(f"{server_b}/api/chat", json=_body("s-chosen", "by curl"),
                          timeout=30).status_code == 200
        first.get("/api/chat/sessions/first-contact")
        second.get("/api/chat/sessions/first-contact")
        assert _said(first.get("/api/chat/sessions/s-chosen")) == ["by curl"]
        assert second.get("/api/chat/sessions/s-chosen").status_code == 404
        own = second.post("/api/chat", json=_body("s-chosen", "my own s-chosen"))
        assert own.status_code == 200, "the id is free for the second browser's own session"
        assert _said(second.get("/api/chat/sessions/s-chosen")) == ["my own s-chosen"]
        assert _said(first.get("/api/chat/sessions/s-chosen")) == ["by curl"]

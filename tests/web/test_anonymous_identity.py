"""Who a user is without sign-in, and whose a session is: over real HTTP, on real Redis.

Server B runs under uvicorn (tests/upstream_server.serve) and httpx is the client: a
cookie-less `httpx.post` per call is curl, an `httpx.Client` (which keeps cookies) is
a browser.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from roleplay.core.redis_keys import redis_keys
from tests.support.fake_llm import FakeLLM
from tests.support.sign_in import SECRET, bearer


@pytest.fixture
def server_b(fake_upstream: FakeLLM) -> Iterator[str]:
    from local_runner.app import build_app
    from tests.support.upstream_server import serve

    with serve(build_app()) as url:
        yield url


def turn(session_id: str | None = None, content: str = "안녕") -> dict[str, object]:
    body: dict[str, object] = {"messages": [{"role": "user", "content": content}],
                               "tts_enabled": False}
    if session_id is not None:
        body["session_id"] = session_id
    return body


def curl(url: str, path: str, body: dict[str, object] | None = None,
         **headers: str) -> httpx.Response:
    """One request with no cookie jar, as curl sends it."""
    return httpx.post(url + path, json=body or {}, headers=headers, timeout=30)


def active_users(sync_redis: redis.Redis) -> set[str]:
    return set(sync_redis.zrange(redis_keys().active_users, 0, -1))


@pytest.fixture
def browser(server_b: str) -> Iterator[Callable[[], httpx.Client]]:
    opened: list[httpx.Client] = []

    def open_browser() -> httpx.Client:
        client = httpx.Client(base_url=server_b, timeout=30)
        opened.append(client)
        return client

    yield open_browser
    for client in opened:
        client.close()


def test_21_curls_from_one_machine_are_one_user_under_the_default_cap(
        server_b: str, sync_redis: redis.Redis) -> None:
    """The README's curl example, run 21 times: on main the 21st was 503 for an hour."""
    answers = [curl(server_b, "/api/chat", turn()) for _ in range(21)]
    assert [a.status_code for a in answers] == [200] * 21
    assert len({a.json()["data"]["session_id"] for a in answers}) == 21
    assert len(active_users(sync_redis)) == 1


def test_a_client_inventing_100_session_ids_holds_one_slot(
        server_b: str, settings_env: Callable[..., None], sync_redis: redis.Redis,
        browser: Callable[[], httpx.Client]) -> None:
    settings_env(MAX_CONCURRENT_USERS="3")
    squatter = browser()
    for n in range(100):
        assert squatter.post("/api/chat", json=turn(f"invented-{n}")).status_code == 200
    for n in range(5):
        spoken = squatter.post("/api/tts", json={"text": "네", "session_id": f"tts-{n}"})
        assert spoken.status_code == 200, spoken.text
    assert len(active_users(sync_redis)) == 1, "one client, one place, on chat and on TTS"
    others = [browser(), browser()]
    assert [b.post("/api/chat", json=turn()).status_code for b in others] == [200, 200]


def test_the_cookie_is_set_on_first_contact_and_signed(server_b: str,
                                                      browser: Callable[[], httpx.Client]) -> None:
    first = browser().get("/api/chat/sessions/nothing-yet")
    assert first.status_code == 404
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("rp_anon=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    value = first.cookies["rp_anon"]
    client_id, _, mac = value.partition(".")
    forged = f"{client_id}.{'A' * len(mac)}"
    again = httpx.get(server_b + "/api/chat/sessions/nothing-yet", cookies={"rp_anon": forged})
    assert "rp_anon=" in again.headers.get("set-cookie", ""), "a forged cookie is no cookie"
    kept = httpx.get(server_b + "/api/chat/sessions/nothing-yet", cookies={"rp_anon": value})
    assert "set-cookie" not in kept.headers


def test_a_browsers_first_session_survives_the_cookie_it_got_with_it(
        server_b: str, sync_redis: redis.Redis, browser: Callable[[], httpx.Client]) -> None:
    """Its very first request is filed under its address; from then on it has its cookie."""
    client = browser()
    first = client.post("/api/chat", json=turn(content="처음"))
    assert first.status_code == 200 and client.cookies.get("rp_anon")
    sid = first.json()["data"]["session_id"]
    assert client.post("/api/chat", json=turn(sid, "두 번째")).status_code == 200
    messages = client.get(f"/api/chat/sessions/{sid}").json()["data"]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["처음", "두 번째"]
    assert len(active_users(sync_redis)) == 1, "the address's slot moved to the cookie"


def test_two_anonymous_clients_choosing_the_same_session_id_never_meet(
        server_b: str, browser: Callable[[], httpx.Client]) -> None:
    alice, bob = browser(), browser()
    alice.get("/api/chat/sessions/x")  # cookies first: two clients at one address
    bob.get("/api/chat/sessions/x")
    assert alice.post("/api/chat", json=turn("shared", "앨리스의 비밀")).status_code == 200
    assert bob.post("/api/chat", json=turn("shared", "밥의 말")).status_code == 200
    seen = {name: [m["content"] for m in client.get("/api/chat/sessions/shared").json()["data"]
                   ["messages"] if m["role"] == "user"]
            for name, client in (("alice", alice), ("bob", bob))}
    assert seen == {"alice": ["앨리스의 비밀"], "bob": ["밥의 말"]}
    assert bob.delete("/api/chat/sessions/shared").status_code == 200
    assert alice.get("/api/chat/sessions/shared").status_code == 200, "bob ended only his own"


def test_signed_in_users_choosing_the_same_session_id_never_meet(
        server_b: str, settings_env: Callable[..., None]) -> None:
    """On main the first to use an id squatted it: the other got 404 for their own id."""
    settings_env(JWT_SECRET=SECRET)
    assert curl(server_b, "/api/chat", turn("s-1", "alice here"), **bearer("alice")).status_code == 200
    assert curl(server_b, "/api/chat", turn("s-1", "bob here"), **bearer("bob")).status_code == 200
    for name in ("alice", "bob"):
        view = httpx.get(f"{server_b}/api/chat/sessions/s-1", headers=bearer(name)).json()["data"]
        assert [m["content"] for m in view["messages"] if m["role"] == "user"] == [f"{name} here"]


@pytest.mark.parametrize("subject", ["anonymous", "anon:c:someone"])
def test_a_token_for_the_anonymous_subject_cannot_read_sessions_made_with_auth_off(
        server_b: str, settings_env: Callable[..., None], subject: str) -> None:
    made = curl(server_b, "/api/chat", turn("s-before-sign-in", "auth was off"))
    assert made.status_code == 200
    settings_env(JWT_SECRET=SECRET)
    refused = httpx.get(f"{server_b}/api/chat/sessions/s-before-sign-in", headers=bearer(subject))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
    assert curl(server_b, "/api/chat", turn("s-before-sign-in"), **bearer(subject)).status_code == 401


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
        server_b: str, settings_env: Callable[..., None], sync_redis: redis.Redis) -> None:
    settings_env(MAX_CONCURRENT_USERS="1")
    for spoofed in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        answer = curl(server_b, "/api/chat", turn(), **{"X-Forwarded-For": spoofed})
        assert answer.status_code == 200, "an untrusted peer's header is ignored: one client"
    settings_env(TRUSTED_PROXIES="127.0.0.0/8, ::1", MAX_CONCURRENT_USERS="2")
    sync_redis.delete(redis_keys().active_users)
    behind_proxy = [curl(server_b, "/api/chat", turn(), **{"X-Forwarded-For": f"10.0.0.9, {ip}"})
                    for ip in ("198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.3")]
    assert [a.status_code for a in behind_proxy] == [200, 200, 200, 503]


def test_make_run_restarts_with_an_empty_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Places a previous `make run` left in its embedded Redis do not lock the developer out."""
    from local_runner.__main__ import _start_embedded_services
    from local_runner.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path) as url, redis.Redis.from_url(url) as previous_run:
        previous_run.zadd(redis_keys().active_users,
                          {f"anonymous-session:{n}": time.time() * 1000 for n in range(20)})
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("EMBEDDED_LLM", "0")
    with ExitStack() as stack:
        _start_embedded_services(stack, tmp_path)
        with redis.Redis.from_url(os.environ["REDIS_URL"]) as restarted:
            assert restarted.zcard(redis_keys().active_users) == 0


def test_on_lambda_the_client_is_api_gateways_source_ip(fake_upstream: FakeLLM,
                                                       settings_env: Callable[..., None]) -> None:
    """Mangum puts requestContext.http.sourceIp in scope["client"]; a header cannot change it."""
    from functions.chat.app import handler
    from tests.support.lambda_events import http_api_event, invoke

    def event(method: str, path: str, source_ip: str, **extra: object) -> dict[str, object]:
        built = http_api_event(method, path, **extra)  # type: ignore[arg-type]
        built["requestContext"]["http"]["sourceIp"] = source_ip  # type: ignore[index]
        return built

    settings_env(MAX_CONCURRENT_USERS="1")
    status, first = invoke(handler, event("POST", "/api/chat", "203.0.113.7", body=turn("s-1", "one")))
    assert status == 200, first
    status, again = invoke(handler, event("POST", "/api/chat", "203.0.113.7", body=turn("s-1", "two"),
                                          headers={"x-forwarded-for": "198.51.100.9"}))
    assert status == 200, again
    status, other = invoke(handler, event("POST", "/api/chat", "198.51.100.9", body=turn("s-1")))
    assert status == 503 and other["error"]["code"] == "too_many_users", "another address, a new user"
    route = "GET /api/chat/sessions/{session_id}"
    status, view = invoke(handler, event("GET", "/api/chat/sessions/s-1", "203.0.113.7",
                                         route_key=route))
    assert [m["content"] for m in view["data"]["messages"] if m["role"] == "user"] == ["one", "two"]
    status, _ = invoke(handler, event("GET", "/api/chat/sessions/s-1", "198.51.100.9", route_key=route))
    assert status == 404


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    ("203.0.113.7", None, "", "203.0.113.7"),
    ("203.0.113.7", "198.51.100.1", "", "203.0.113.7"),
    ("10.0.0.2", "198.51.100.1", "10.0.0.0/8", "198.51.100.1"),
    ("10.0.0.2", "198.51.100.66, 198.51.100.1, 10.0.0.5", "10.0.0.0/8", "198.51.100.1"),
    ("10.0.0.2", "10.0.0.9, 10.0.0.5", "10.0.0.0/8", "10.0.0.9"),
    ("10.0.0.2", "not-an-address, 10.0.0.5", "10.0.0.0/8", "10.0.0.5"),
    ("10.0.0.2", None, "10.0.0.0/8", "10.0.0.2"),
    ("2001:db8:1:2:aaaa::1", None, "", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", None, "", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", None, "", "203.0.113.7"),
    ("::1", "[2001:db8::5]", "::1", "2001:db8::/64"),
    ("testclient", "198.51.100.1", "10.0.0.0/8", "testclient"),
])
def test_the_client_address(settings_env: Callable[..., None], peer: str, forwarded: str | None,
                            trusted: str, client: str) -> None:
    from roleplay.core.settings import get_settings
    from roleplay.web.anonymous_client import client_address

    settings_env(TRUSTED_PROXIES=trusted)
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 1234), "headers": headers}
    assert client_address(scope, get_settings().trusted_proxy_networks) == client


def test_a_bad_trusted_proxies_value_stops_the_process(settings_env: Callable[..., None]) -> None:
    from roleplay.core.settings import ConfigurationError, get_settings

    settings_env(TRUSTED_PROXIES="10.0.0.0/8, proxy.internal")
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        get_settings()

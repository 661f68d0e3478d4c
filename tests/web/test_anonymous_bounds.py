"""One address may use `ANON_COOKIES_PER_ADDRESS` anonymous cookies per `SESSION_TTL_S`: over
real HTTP (uvicorn, tests/support/upstream_server.serve), on real Redis.

On main a client that threw its cookie away after each use was a new user each time: it
filled the concurrent-user cap from one address and had a quota per cookie. A cookie
past the bound is refused now: its requests are the address's own (one place, one
quota, shared with the address's cookie-less clients).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from roleplay.core.redis_keys import redis_keys
from tests.support.fake_llm import FakeLLM

BOUND = 4


@pytest.fixture
def server_b(fake_upstream: FakeLLM, settings_env: Callable[..., None]) -> Iterator[str]:
    from local_runner.app import build_app
    from tests.support.upstream_server import serve

    settings_env(ANON_COOKIES_PER_ADDRESS=str(BOUND))
    with serve(build_app()) as url:
        yield url


def _turn(http: httpx.Client, session_id: str | None = None, content: str = "안녕") -> httpx.Response:
    body: dict[str, object] = {"tts_enabled": False, "messages": [{"role": "user", "content": content}]}
    if session_id is not None:
        body["session_id"] = session_id
    return http.post("/api/chat", json=body)


def _active(sync_redis: redis.Redis) -> set[str]:
    return {str(member) for member in sync_redis.zrange(redis_keys().active_users, 0, -1)}


def _fresh_browser(server_b: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server_b, timeout=30, headers=headers)


def _client_id(browser: httpx.Client) -> str:
    return f"anon:c:{browser.cookies['rp_anon'].partition('.')[0]}"


def test_fresh_cookies_from_one_address_hold_the_bound_and_the_address_at_most(
        server_b: str, sync_redis: redis.Redis) -> None:
    """Each round: a first turn without a cookie (one is minted), a second with it."""
    for _ in range(12):
        with _fresh_browser(server_b) as browser:
            assert _turn(browser).status_code == 200
            assert _turn(browser).status_code == 200
    assert len(_active(sync_redis)) == BOUND + 1, "on main: 12 places, one per cookie"


def test_minting_cookies_at_one_address_leaves_the_cap_to_the_others(
        server_b: str, settings_env: Callable[..., None], sync_redis: redis.Redis) -> None:
    settings_env(TRUSTED_PROXIES="127.0.0.0/8, ::1", MAX_CONCURRENT_USERS=str(BOUND + 2))
    mint_from = {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(3 * BOUND):
        with _fresh_browser(server_b, **mint_from) as browser:
            _turn(browser)
            _turn(browser)
    with _fresh_browser(server_b, **{"X-Forwarded-For": "203.0.113.1"}) as other:
        answer = _turn(other)
        assert answer.status_code == 200, f"on main the cap was full of cookies: {answer.text}"
    assert len(_active(sync_redis)) == BOUND + 2


def test_minting_cookies_does_not_multiply_the_quota(
        server_b: str, settings_env: Callable[..., None]) -> None:
    rpm = 2
    settings_env(USER_RPM=str(rpm))
    minute = int(time.time() // 60)
    answered = 0
    for _ in range(10):
        with _fresh_browser(server_b) as browser:
            answered += sum(_turn(browser).status_code == 200 for _ in range(3))
    minutes = int(time.time() // 60) - minute + 1
    assert answered <= (BOUND + 1) * rpm * minutes, f"{answered} turns (on main: 22 of 30)"


def test_a_curl_throwing_its_cookies_away_uses_none_of_the_room(
        server_b: str, sync_redis: redis.Redis) -> None:
    """A cookie counts when it comes back, not when it is minted: twenty-one curls leave
    the address's room to its browsers."""
    for _ in range(21):
        assert httpx.post(server_b + "/api/chat", timeout=30, json={
            "tts_enabled": False, "messages": [{"role": "user", "content": "안녕"}]}).status_code == 200
    browsers = [_fresh_browser(server_b) for _ in range(BOUND)]
    try:
        for browser in browsers:
            browser.get("/api/chat/sessions/first-contact")
            assert _turn(browser).status_code == 200
        assert _active(sync_redis) == {_client_id(b) for b in browsers}, \
            "each browser a place of its own (the first took the curls' over, as it does)"
    finally:
        for browser in browsers:
            browser.close()


def test_a_cookie_past_the_bound_is_the_address_until_a_cookie_idles(
        server_b: str, sync_redis: redis.Redis) -> None:
    browsers = [_fresh_browser(server_b) for _ in range(BOUND + 1)]
    try:
        for browser in browsers:
            browser.get("/api/chat/sessions/first-contact")
            assert _turn(browser).status_code == 200
        late = browsers[-1]
        placed = {_client_id(b) for b in browsers[:-1]}
        active = _active(sync_redis)
        assert placed <= active and _client_id(late) not in active
        made = _turn(late, content="filed under the address")
        session_id = made.json()["data"]["session_id"]
        curl = httpx.get(f"{server_b}/api/chat/sessions/{session_id}", timeout=30)
        assert curl.status_code == 200, "the refused cookie's turn is the address's"

        cookies = _address_key(sync_redis)
        assert sync_redis.zcard(cookies) == BOUND
        sync_redis.zadd(cookies, {_client_id(browsers[0]).removeprefix("anon:c:"): 0}, xx=True)
        assert _turn(late, session_id, "now my own").status_code == 200
        assert _client_id(late) in _active(sync_redis), "a cookie idle for the window made room"
        again = httpx.get(f"{server_b}/api/chat/sessions/{session_id}", timeout=30)
        assert again.status_code == 404, "and its session, reached through the address, is bound to it"
    finally:
        for browser in browsers:
            browser.close()


def _address_key(sync_redis: redis.Redis) -> str:
    """The one address's cookie set (every test client here is 127.0.0.1)."""
    keys = list(sync_redis.scan_iter(match=f"{redis_keys().prefix}anon-cookies:*"))
    assert len(keys) == 1, keys
    return str(keys[0])


def test_the_address_set_holds_the_bound_and_expires_with_the_window(
        server_b: str, settings_env: Callable[..., None], sync_redis: redis.Redis) -> None:
    for _ in range(3 * BOUND):
        with _fresh_browser(server_b) as browser:
            browser.get("/api/chat/sessions/first-contact")
            browser.get("/api/chat/sessions/second-contact")
    key = _address_key(sync_redis)
    assert sync_redis.zcard(key) == BOUND
    assert 0 < sync_redis.pttl(key) <= 3600 * 1000

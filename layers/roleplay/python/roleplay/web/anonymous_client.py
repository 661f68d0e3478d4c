"""Who an anonymous caller is (sign-in off): the client, never the session.

A browser is its signed cookie (`ANON_COOKIE_NAME`, `rp_anon`): a random id and its
HMAC, set on its first contact (HttpOnly, SameSite=Lax, a year). A client that keeps
no cookies (curl, scripts) is its address: the TCP peer, or, when the peer is one of
`TRUSTED_PROXIES`, the nearest hop of `X-Forwarded-For` that is not. On Lambda behind
API Gateway the peer is the event's `requestContext` sourceIp, which Mangum puts in
`scope["client"]`; a client cannot forge it. IPv6 addresses count per /64, the block
one machine rotates its addresses through.

So twenty-one curls from one machine are one user, and a client inventing session ids
still holds one place under the cap. A browser's very first request, before it has
its cookie, is filed under its address; `User.fallback_owner` lets it keep that
session and slot once the cookie arrives (and `sessions.scope` then binds the session
to the cookie, out of reach of the address's other clients).

Cookies cost nothing to mint, so an address could mint one per request and each would be
a user of its own: a place under the cap and a quota each. So one address may use at
most `ANON_COOKIES_PER_ADDRESS` cookies per `ACTIVE_TTL_S` (a sorted set per address,
cookie → last seen, Redis's clock). A cookie counts when it is first presented from the
address, not when it is minted (a curl throws its cookie away and must not use up the
address's room). Past the bound a further cookie is refused, not shared: its request is
the address's own (its place, quota and sessions, which the address's cookie-less
clients share by design), and it is tried again on each request until a cookie of the
address has been idle for the window. Sharing another cookie instead would hand a
stranger behind the same NAT that person's sessions and persona, for the cookie's year.

The HMAC key is `ANON_COOKIE_SECRET`, else derived from `JWT_SECRET`, else a random
key made once and kept in Redis so that every instance (and every restart of
`make run`) agrees; it is read once per process. Addresses are kept only as HMACs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from functools import lru_cache
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roleplay.core.identity import ADDRESS_PREFIX, ANONYMOUS_PREFIX, User
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import Settings, get_settings

COOKIE_MAX_AGE_S = 365 * 24 * 3600
_STATE_KEY = "anon_cookie"
"""Where `anonymous_user` leaves a new cookie in `request.state` for `AnonymousCookie`."""
_JWT_DERIVATION = b"roleplay anonymous client cookie"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

if TYPE_CHECKING:
    from roleplay.core.lua_script import LuaScript

_redis_keys_cache: dict[tuple[str, str], bytes] = {}

# KEYS: the address's cookies (sorted set). ARGV: client id, window ms, bound. Drops cookies
# idle for the window; a cookie already there, or one more while fewer than the bound are,
# is (re)stamped with Redis's clock. Answers 1 (the cookie has its place) or 0 (refused).
# The key lives as long as its newest stamp.
_PLACE_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""
PLACE_CACHE_S = 15.0
"""A process asks Redis about a cookie with a place at most this often (it is restamped
then), so a browser's requests cost no round trip each; far under the window (60 s or
more), so a cookie in use never drops out of its address's set."""
_PLACE_CACHE_MAX = 10_000
_placed: dict[tuple[str, str], float] = {}
"""(the address's set, client id) → monotonic time until which the cookie needs no check."""


async def cookie_key(settings: Settings) -> bytes:
    if settings.anon_cookie_secret is not None:
        return settings.anon_cookie_secret.get_secret_value().encode()
    if settings.jwt_secret is not None:
        return hmac.new(settings.jwt_secret.get_secret_value().encode(), _JWT_DERIVATION,
                        hashlib.sha256).digest()
    name = redis_keys().anon_cookie_key
    cached = _redis_keys_cache.get((settings.effective_redis_url, name))
    if cached is not None:
        return cached
    from roleplay.core.redis_client import get_redis  # here: a handler's cold start skips redis

    async with (await get_redis()).pipeline(transaction=True) as pipe:
        pipe.set(name, secrets.token_hex(32), nx=True)
        pipe.get(name)
        _, stored = await pipe.execute()
    key = bytes.fromhex(stored)
    _redis_keys_cache[(settings.effective_redis_url, name)] = key
    return key


@lru_cache(maxsize=8_192)
def _mac(key: bytes, kind: bytes, value: str, length: int) -> str:
    """Remembered: every request of a browser signs its address and checks its cookie
    again; with the address parsed once too, 7.7 -> 1.6 µs a request (issue 30)."""
    digest = hmac.new(key, kind + value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:length]


def signed_cookie(key: bytes, client_id: str) -> str:
    return f"{client_id}.{_mac(key, b'cookie:', client_id, 32)}"


def verified_client_id(key: bytes, cookie: str) -> str | None:
    client_id, _, mac = cookie.partition(".")
    if not client_id or len(client_id) > 64 or not mac:
        return None
    return client_id if hmac.compare_digest(mac, _mac(key, b"cookie:", client_id, 32)) else None


@lru_cache(maxsize=4_096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(text: str, proxies: tuple[_Network, ...]) -> bool:
    address = _ip(text)
    return address is not None and any(address in network for network in proxies)


def client_address(scope: Scope, proxies: tuple[_Network, ...]) -> str:
    """The caller's address: the peer, or behind trusted proxies the nearest untrusted hop
    of X-Forwarded-For (a hop that is not an address ends the walk: a proxy we trust put
    nothing readable there, so the last address we could trust stands)."""
    client = scope.get("client")
    address = str(client[0]) if client and client[0] else "unknown"
    if proxies and _trusted(address, proxies):
        forwarded = ",".join(value.decode("latin-1") for name, value in scope.get("headers", ())
                             if name == b"x-forwarded-for")
        for hop in reversed([hop for hop in forwarded.split(",") if hop.strip()]):
            if _ip(hop) is None:
                break
            address = hop.strip()
            if not _trusted(address, proxies):
                break
    parsed = _ip(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address


def address_user_id(key: bytes, address: str) -> str:
    return f"{ADDRESS_PREFIX}{_mac(key, b'address:', address, 22)}"


@lru_cache(maxsize=1)
def _place_script() -> LuaScript:
    from roleplay.core.lua_script import LuaScript  # here: a handler's cold start skips redis

    return LuaScript(_PLACE_LUA)


async def cookie_has_place(settings: Settings, address_id: str, client_id: str) -> bool:
    """Whether the cookie `client_id` is one of the `ANON_COOKIES_PER_ADDRESS` its address
    may use now (taking a place for it if there is room); one round trip, or none while a
    check of this process is fresh."""
    name = redis_keys().anon_cookies(address_id)
    now = time.monotonic()
    if _placed.get((name, client_id), 0.0) > now:
        return True
    placed = bool(await _place_script()(
        [name], [client_id, settings.active_ttl_s * 1000, settings.anon_cookies_per_address]))
    if placed:
        if len(_placed) >= _PLACE_CACHE_MAX:
            _placed.clear()
        _placed[(name, client_id)] = now + min(PLACE_CACHE_S, settings.active_ttl_s / 4)
    return placed


async def anonymous_user(request: Request) -> User:
    """The cookie's client, or the address's: a request without a good cookie gets one
    (`AnonymousCookie` adds it to the answer), and one whose cookie has no place among its
    address's is the address's."""
    settings = get_settings()
    key = await cookie_key(settings)
    address_id = address_user_id(key, client_address(request.scope,
                                                      settings.trusted_proxy_networks))
    cookie = request.cookies.get(settings.anon_cookie_name)
    client_id = verified_client_id(key, cookie) if cookie else None
    if client_id is None:
        request.state.anon_cookie = signed_cookie(key, secrets.token_urlsafe(16))
        return User(id=address_id, authenticated=False)
    if not await cookie_has_place(settings, address_id, client_id):
        return User(id=address_id, authenticated=False)
    return User(id=f"{ANONYMOUS_PREFIX}c:{client_id}", authenticated=False,
                fallback_owner=address_id)


class AnonymousCookie:
    """Adds the cookie that `anonymous_user` issued to the answer, whatever the answer
    (an error or a stream too), so a browser holds it from its first contact on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = scope.get("state", {}).get(_STATE_KEY)
                if cookie:
                    message.setdefault("headers", []).append(
                        (b"set-cookie", _set_cookie(cookie, secure=_over_https(scope))))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _over_https(scope: Scope) -> bool:
    """HTTPS to us, or to a trusted proxy that says so (`X-Forwarded-Proto`)."""
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    proxies = get_settings().trusted_proxy_networks
    return bool(proxies and client and _trusted(str(client[0]), proxies)) and any(
        name == b"x-forwarded-proto" and value.split(b",")[0].strip() == b"https"
        for name, value in scope.get("headers", ()))


def _set_cookie(value: str, *, secure: bool) -> bytes:
    name = get_settings().anon_cookie_name
    attributes = f"{name}={value}; Max-Age={COOKIE_MAX_AGE_S}; Path=/; HttpOnly; SameSite=Lax"
    return (attributes + ("; Secure" if secure else "")).encode()

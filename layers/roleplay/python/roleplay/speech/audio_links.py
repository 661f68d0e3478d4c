"""Signed audio URLs: the audio a user made is theirs, not whoever learns its id.

Every URL Server B hands out for audio served by itself is
`/api/audio/{id}?expires=<epoch s>&sig=<HMAC>`: an HMAC-SHA256, with a server key, over
the id and the expiry, valid for `AUDIO_LINK_TTL_S` (1 h). It is the only thing that
opens the audio, so a browser's `<audio src>` plays it without headers, and anyone
holding the bare id, a forged signature or an expired link (another user's token or
none) gets 404, as for audio that does not exist. Deployed, audio in S3 is fetched
through presigned S3 URLs, which work the same way.

The key is derived, under a label of its own, from what the anonymous cookie's key is
made of (`web.anonymous_client`): `ANON_COOKIE_SECRET`, else `JWT_SECRET`, else the
random key kept in Redis (`anon-cookie-key`); so every instance and every function
(chat signs, tts checks) agrees, and the cookie's key is never the links' key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode

from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import Settings, get_settings

PATH = "/api/audio/{file_id}"
_LABEL = b"roleplay audio link"
_MAX_EXPIRES_DIGITS = 12
_redis_keys_cache: dict[tuple[str, str], bytes] = {}


async def _server_secret(settings: Settings) -> bytes:
    if settings.anon_cookie_secret is not None:
        return settings.anon_cookie_secret.get_secret_value().encode()
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    name = redis_keys().anon_cookie_key
    cached = _redis_keys_cache.get((settings.effective_redis_url, name))
    if cached is not None:
        return cached
    from roleplay.core.redis_client import get_redis

    async with (await get_redis()).pipeline(transaction=True) as pipe:
        pipe.set(name, secrets.token_hex(32), nx=True)
        pipe.get(name)
        _, stored = await pipe.execute()
    key = bytes.fromhex(stored)
    _redis_keys_cache[(settings.effective_redis_url, name)] = key
    return key


async def _link_key() -> bytes:
    return hmac.new(await _server_secret(get_settings()), _LABEL, hashlib.sha256).digest()


def _signature(key: bytes, file_id: str, expires: int) -> str:
    digest = hmac.new(key, f"audio:{file_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def signed_url(file_id: str) -> str:
    """The URL that serves `file_id` until `AUDIO_LINK_TTL_S` from now."""
    expires = int(time.time()) + get_settings().audio_link_ttl_s
    query = urlencode({"expires": expires, "sig": _signature(await _link_key(), file_id, expires)})
    return f"{PATH.format(file_id=file_id)}?{query}"


async def verified(file_id: str, expires: str | None, sig: str | None) -> bool:
    """Whether `expires` and `sig` are a link this server made for `file_id`, not yet expired."""
    if not (expires and sig and expires.isascii() and expires.isdigit()
            and len(expires) <= _MAX_EXPIRES_DIGITS):
        return False
    if int(expires) <= time.time():
        return False
    return hmac.compare_digest(sig.encode(), _signature(await _link_key(), file_id,
                                                        int(expires)).encode())

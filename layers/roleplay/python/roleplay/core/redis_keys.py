"""Every Redis key Server B writes, in one place, under one prefix (`REDIS_KEY_PREFIX`).

On a Redis Cluster (ElastiCache Serverless) a script, a transaction or a multi-key
command may only touch keys of one hash slot, and only the part of a key inside its
first `{...}` is hashed. So keys that are used together carry one hash tag:

- a session's keys: `{s…}`, its storage id (already derived from owner and session id);
- a user's keys: `{u:<user id>}` (`user_tag`);
- the GPU coordinator's keys: `{gpu}` (its scripts read the state and the lease sets
  together; there is one GPU, so one slot loses nothing);
- every other key stands alone, untagged: the whole key is hashed.

Sessions of different users therefore spread over the shards; no tag is shared by all.

| key                              | type       | TTL                | holds                               |
|----------------------------------|------------|--------------------|-------------------------------------|
| `{p}character:{id}`              | string     | none               | a character, JSON                   |
| `{p}characters`                  | sorted set | none               | `{created_ms}:{id}`, for paging     |
| `{p}character:{id}:image`        | string     | none               | the PNG an imported card came in    |
| `{p}user:{U}:persona`            | string     | none               | the user's persona, JSON            |
| `{p}user:{U}:characters`         | hash       | none               | character id → its stored bytes     |
| `{p}user:{U}:conversations`      | sorted set | none (swept)       | the user's session ids → updated, ms|
| `{p}user:{U}:conversation-cards` | hash       | none (swept)       | session id → its list card, JSON    |
| `{p}quota:{U}:rpm:{minute}`      | string     | 61 s               | the user's requests this minute     |
| `{p}quota:{U}:tokens:{day}`      | string     | 2 days             | the user's tokens that day          |
| `{p}quota:{U}:tts:{day}`         | string     | 2 days             | the user's seconds of speech        |
| `{p}tts-busy:{U}`                | sorted set | TTS_READ_TIMEOUT_S | a user's syntheses running now      |
| `{p}session:{S}`                 | hash       | retention          | metadata, summary and its watermark |
| `{p}session:{S}:messages`        | list       | retention          | the full transcript, JSON each      |
| `{p}session:{S}:lorebook`        | string     | retention          | entries fired on the last turn      |
| `{p}session:{S}:episodes`        | hash       | retention          | memory: episodes, vectors, recalls  |
| `{p}session:{S}:cold`            | string     | retention          | moved to the cold store: its digest |
| `{p}session:{S}:summary-lock`    | string     | SUMMARY_LOCK_TTL_S | who is summarizing the session now  |
| `{p}session:{S}:turn`            | string     | TURN_LEASE_S       | the turn in progress (its token)    |
| `{p}session:{S}:ids`             | hash       | retention          | message id → index in the transcript|
| `{p}conversations:hot`           | sorted set | none (swept)       | conversations in Redis → last use   |
| `{p}conversations:cold`          | sorted set | none (swept)       | conversations moved out → last use  |
| `{p}token-ratios`                | hash       | none               | model → upstream/local token ratio  |
| `{p}active-users`                | sorted set | members expire     | user id → last seen (ms), the cap   |
| `{p}breaker:{url hash}`          | hash       | 10 × open time     | an upstream's shared circuit breaker|
| `{p}tts:engine-weights`          | string     | 600 s              | the GPT-SoVITS weight pair loaded   |
| `{p}tts:engine-lock`             | string     | the lock's lease   | who is switching the weights now    |
| `{p}{gpu}:state`                 | hash       | none               | resident GPU mode, switch figures   |
| `{p}{gpu}:leases:{mode}`         | sorted set | members expire     | requests in flight in that mode     |
| `{p}{gpu}:switch-lock`           | string     | the switch's bound | who is switching the GPU now        |
| `{p}anon-cookie-key`             | string     | none               | the anonymous cookie's HMAC key     |
| `{p}anon-cookies:{A}`            | sorted set | ACTIVE_TTL_S       | an address's cookies → last seen, ms|
| `{p}keys-version`                | string     | none               | the key layout migrated to          |
| `{p}health-probe`                | string     | 10 s               | written by every health check       |

`S` is `{s…}`, `U` is `{u:…}` and `A` the `{u:…}` of an address's user id, braces included.
Characters are content, not session state, so they never expire. Session keys live
`CONVERSATION_RETENTION_DAYS` ("retention"), refreshed on every use, unless the archive
(`sessions.conversation_archive`) moves them to the cold store first; a lock expires on
its own if its holder dies. Keys named before hash tags existed are renamed once by
`roleplay.core.key_migration`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from roleplay.core.settings import get_settings

KEYS_VERSION = "2"
"""The layout above: 2 added the hash tags (1, implicit, had none)."""


def user_tag(user_id: str) -> str:
    """`{u:<id>}`; an id holding a brace would end or nest the tag, so it is hashed."""
    if "{" in user_id or "}" in user_id:
        user_id = "#" + hashlib.sha256(user_id.encode()).hexdigest()[:32]
    return f"{{u:{user_id}}}"


def session_tag(session_id: str) -> str:
    """`{<storage id>}`: storage ids (`sessions.scope.storage_id`) hold no braces."""
    return f"{{{session_id}}}"


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    def character(self, character_id: str) -> str:
        return f"{self.prefix}character:{character_id}"

    def character_image(self, character_id: str) -> str:
        return f"{self.prefix}character:{character_id}:image"

    @property
    def characters_index(self) -> str:
        return f"{self.prefix}characters"

    def user_persona(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_tag(user_id)}:persona"

    def user_characters(self, user_id: str) -> str:
        """The characters a user stored and their bytes, for the per-user bounds."""
        return f"{self.prefix}user:{user_tag(user_id)}:characters"

    def quotas(self, user_id: str, minute: int, day: int) -> tuple[str, str, str]:
        """The user's request count this minute, tokens and seconds of speech that day."""
        base = f"{self.prefix}quota:{user_tag(user_id)}:"
        return f"{base}rpm:{minute}", f"{base}tokens:{day}", f"{base}tts:{day}"

    def tts_busy(self, user_id: str) -> str:
        return f"{self.prefix}tts-busy:{user_tag(user_id)}"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_tag(session_id)}"

    def session_messages(self, session_id: str) -> str:
        return f"{self.session(session_id)}:messages"

    def session_lorebook(self, session_id: str) -> str:
        return f"{self.session(session_id)}:lorebook"

    def summary_lock(self, session_id: str) -> str:
        return f"{self.session(session_id)}:summary-lock"

    def turn_lease(self, session_id: str) -> str:
        return f"{self.session(session_id)}:turn"

    def session_ids(self, session_id: str) -> str:
        return f"{self.session(session_id)}:ids"

    def session_cold(self, session_id: str) -> str:
        """Left where a conversation was when it moved to the cold store: its copy's digest."""
        return f"{self.session(session_id)}:cold"

    def session_episodes(self, session_id: str) -> str:
        """The session's memory (`sessions.episode_store`): in its slot, with its TTL."""
        return f"{self.session(session_id)}:episodes"

    def user_conversations(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_tag(user_id)}:conversations"

    def user_conversation_cards(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_tag(user_id)}:conversation-cards"

    @property
    def hot_conversations(self) -> str:
        return f"{self.prefix}conversations:hot"

    @property
    def cold_conversations(self) -> str:
        return f"{self.prefix}conversations:cold"

    @property
    def token_ratios(self) -> str:
        return f"{self.prefix}token-ratios"

    @property
    def active_users(self) -> str:
        return f"{self.prefix}active-users"

    def breaker(self, upstream_hash: str) -> str:
        return f"{self.prefix}breaker:{upstream_hash}"

    @property
    def tts_engine_weights(self) -> str:
        return f"{self.prefix}tts:engine-weights"

    @property
    def tts_engine_lock(self) -> str:
        return f"{self.prefix}tts:engine-lock"

    @property
    def gpu_state(self) -> str:
        return f"{self.prefix}{{gpu}}:state"

    def gpu_leases(self, mode: str) -> str:
        return f"{self.prefix}{{gpu}}:leases:{mode}"

    @property
    def gpu_switch_lock(self) -> str:
        return f"{self.prefix}{{gpu}}:switch-lock"

    @property
    def anon_cookie_key(self) -> str:
        return f"{self.prefix}anon-cookie-key"

    def anon_cookies(self, address_id: str) -> str:
        """The anonymous cookies an address used lately (`web.anonymous_client`); one key,
        so its script runs on any cluster; tagged as the address's user keys are."""
        return f"{self.prefix}anon-cookies:{user_tag(address_id)}"

    @property
    def health_probe(self) -> str:
        return f"{self.prefix}health-probe"

    @property
    def keys_version(self) -> str:
        return f"{self.prefix}keys-version"


def redis_keys() -> RedisKeys:
    return RedisKeys(get_settings().redis_key_prefix)

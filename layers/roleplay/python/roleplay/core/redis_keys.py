"""Every Redis key Server B writes, in one place, under one prefix (`REDIS_KEY_PREFIX`).

| key                            | type       | TTL                | holds                               |
|--------------------------------|------------|--------------------|-------------------------------------|
| `{p}character:{id}`            | string     | none               | a character, JSON                   |
| `{p}characters`                | sorted set | none               | `{created_ms}:{id}`, for paging     |
| `{p}character:{id}:image`      | string     | none               | the PNG an imported card came in    |
| `{p}user:{id}:persona`         | string     | none               | the user's persona, JSON            |
| `{p}session:{id}`              | hash       | SESSION_TTL_S      | metadata, summary and its watermark |
| `{p}session:{id}:messages`     | list       | SESSION_TTL_S      | the full transcript, JSON each      |
| `{p}session:{id}:lorebook`     | string     | SESSION_TTL_S      | entries fired on the last turn      |
| `{p}session:{id}:summary-lock` | string     | SUMMARY_LOCK_TTL_S | who is summarizing the session now  |
| `{p}session:{id}:turn`         | string     | TURN_LEASE_S       | the turn in progress (its token)    |
| `{p}session:{id}:ids`          | hash       | SESSION_TTL_S      | message id → index in the transcript|
| `{p}token-ratios`              | hash       | none               | model → upstream/local token ratio  |
| `{p}active-users`              | sorted set | members expire     | user id → last seen (ms), the cap   |
| `{p}tts:engine-weights`        | string     | 600 s              | the GPT-SoVITS weight pair loaded   |
| `{p}gpu:state`                 | hash       | none               | resident GPU mode, switch figures   |
| `{p}gpu:leases:{mode}`         | sorted set | members expire     | requests in flight in that mode     |
| `{p}gpu:switch-lock`           | string     | the switch's bound | who is switching the GPU now        |
| `{p}anon-cookie-key`           | string     | none               | the anonymous cookie's HMAC key     |
| `{p}tts-busy:{user id}`        | sorted set | TTS_READ_TIMEOUT_S | a user's syntheses running now      |

Characters are content, not session state, so they never expire. Session keys have
their TTL refreshed on every use; a lock expires on its own if its holder dies.
"""

from __future__ import annotations

from dataclasses import dataclass

from roleplay.core.settings import get_settings


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    def character(self, character_id: str) -> str:
        return f"{self.prefix}character:{character_id}"

    def character_image(self, character_id: str) -> str:
        return f"{self.prefix}character:{character_id}:image"

    def user_persona(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:persona"

    def session_lorebook(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:lorebook"

    @property
    def characters_index(self) -> str:
        return f"{self.prefix}characters"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def session_messages(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:messages"

    def summary_lock(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:summary-lock"

    def turn_lease(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:turn"

    def session_ids(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:ids"

    @property
    def token_ratios(self) -> str:
        return f"{self.prefix}token-ratios"

    @property
    def active_users(self) -> str:
        return f"{self.prefix}active-users"

    @property
    def tts_engine_weights(self) -> str:
        return f"{self.prefix}tts:engine-weights"

    @property
    def gpu_state(self) -> str:
        return f"{self.prefix}gpu:state"

    def gpu_leases(self, mode: str) -> str:
        return f"{self.prefix}gpu:leases:{mode}"

    @property
    def gpu_switch_lock(self) -> str:
        return f"{self.prefix}gpu:switch-lock"

    @property
    def anon_cookie_key(self) -> str:
        return f"{self.prefix}anon-cookie-key"

    def tts_busy(self, user_id: str) -> str:
        return f"{self.prefix}tts-busy:{user_id}"


def redis_keys() -> RedisKeys:
    return RedisKeys(get_settings().redis_key_prefix)

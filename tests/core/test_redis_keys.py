"""Keys that a Redis Cluster can serve: those used together share a slot, and sessions of
different users spread over the slots (roleplay.core.redis_keys)."""

from __future__ import annotations

from collections import Counter

import pytest
from redis.crc import key_slot

from roleplay.core.redis_keys import RedisKeys, user_tag
from roleplay.sessions.scope import storage_id
from roleplay.sessions.store import SessionStore

KEYS = RedisKeys("rp:")


def slots(*keys: str) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def test_every_key_of_a_session_lies_in_one_slot(settings_env: object) -> None:
    session = storage_id("user-1", "chat-1")
    keys = [*SessionStore().keys(session), KEYS.session_lorebook(session)]
    assert len(set(keys)) == 8
    assert len(slots(*keys)) == 1


@pytest.mark.parametrize("user_id", ["user-1", "anon:203.0.113.9", "a}b{c", "}", "{x}", ""])
def test_every_key_of_a_user_lies_in_one_slot_whatever_the_id(user_id: str) -> None:
    assert len(slots(KEYS.user_persona(user_id), *KEYS.quotas(user_id, 29_000_000, 20_000),
                     KEYS.tts_busy(user_id), KEYS.user_conversations(user_id),
                     KEYS.user_conversation_cards(user_id))) == 1


def test_ids_with_braces_get_tags_of_their_own() -> None:
    assert user_tag("a}b") != user_tag("a}c")
    assert user_tag("plain") == "{u:plain}"


def test_the_gpu_state_and_every_lease_set_lie_in_one_slot() -> None:
    assert len(slots(KEYS.gpu_state, KEYS.gpu_leases("chat"), KEYS.gpu_leases("speech"),
                     KEYS.gpu_switch_lock)) == 1


def test_sessions_of_a_thousand_conversations_spread_over_three_shards() -> None:
    """1,000 sessions of 100 users on a three-shard split of the slots (as
    `redis-cli --cluster create` makes it): no shard holds more than 45%."""
    def shard(slot: int) -> int:
        return min(slot * 3 // 16384, 2)

    counts = Counter(shard(key_slot(KEYS.session(storage_id(f"user-{n % 100}", f"chat-{n}")).encode()))
                     for n in range(1000))
    assert len(counts) == 3
    assert max(counts.values()) <= 450, counts


def test_no_tag_is_shared_by_unrelated_keys() -> None:
    standalone = [KEYS.character("c1"), KEYS.characters_index, KEYS.active_users,
                  KEYS.token_ratios, KEYS.anon_cookie_key, KEYS.breaker("abc")]
    assert all("{" not in key for key in standalone)

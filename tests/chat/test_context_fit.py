"""The exact count at the context's edge (`roleplay.chat.context_fit`) keeps room for the
reply: a prompt the upstream's own tokenizer counts as fitting the context alone, but not
with `max_tokens` after it, is planned again before it is sent, never sent to be refused."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from roleplay.chat import token_ratio
from tests.support.vllm_standin import VllmStandin

SMALL_REPLY, LARGE_REPLY = 64, 600


def _line(n: int) -> str:
    return (f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. "
            f"12시 34분, 영수증 번호 5678-9012. 너는 어때?")


def _turn(client: TestClient, text: str, max_tokens: int) -> dict:
    response = client.post("/api/chat", json={"session_id": "s-edge", "max_tokens": max_tokens,
                                              "tts_enabled": False,
                                              "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_a_prompt_that_fits_the_context_only_without_its_reply_is_cut_before_it_is_sent(
        vllm_upstream: VllmStandin, client: TestClient, settings_env: Callable[..., None],
        sync_redis: redis.Redis, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    # No summary can make room (every message is recent): only cutting the oldest can.
    settings_env(RECENT_TURNS_TO_KEEP="100", SUMMARY_THRESHOLD="1.0")
    for n in range(14):
        _turn(client, _line(n), SMALL_REPLY)
    context = vllm_upstream.max_model_len
    # A learned ratio far below the truth: the estimate says the prompt fits with room for
    # the reply, so only the exact count can tell it does not.
    sync_redis.hset(f"{key_prefix}token-ratios", vllm_upstream.model, "0.5")
    token_ratio._cache.clear()
    counted, accepted = vllm_upstream.tokenize_calls, len(vllm_upstream.accepted)
    caplog.set_level(logging.INFO, "roleplay.chat.context_fit")

    reply = _turn(client, _line(14), LARGE_REPLY)

    assert vllm_upstream.tokenize_calls > counted, "the prompt at the edge was counted exactly"
    assert vllm_upstream.rejected == [], "no prompt was sent to be refused"
    [first_count, *_] = [r.args[0] for r in caplog.records if isinstance(r.args, tuple)
                         and r.getMessage().startswith("prompt of ")]
    assert first_count < context < first_count + LARGE_REPLY, \
        "the exact count fitted the context alone, not with the reply: it was planned again"
    [sent] = vllm_upstream.accepted[accepted:]
    assert sent + LARGE_REPLY <= context and reply["usage"]["prompt_tokens"] == sent
    assert reply["dropped_messages"] > 0 and not reply["context_summarized"], "cut, oldest first"

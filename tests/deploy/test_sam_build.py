"""What the real `sam build` makes runs as Lambda runs it.

Each function is invoked from `.aws-sam/build` in a bare Python 3.12 (`-I -S -B`): only its
folder (/var/task) and its layers' `python/` (/opt/python) on the path, no site-packages,
no bytecode written, with API Gateway HTTP API v2 events. Every module it loads from the
build must come with the bytecode the build compiled.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from infra.sam_build import ROOT, function_dir, layer_paths, python312, size_mb
from tests.support.sign_in import SECRET, bearer

Step = dict[str, Any]

# Runs in the bare interpreter. argv: function folder, layer folders (JSON), steps (JSON),
# the folder holding lambda_events.py (put on the path only after the app is imported).
_PROBE = r"""
import base64, collections, json, os, sys, urllib.parse
function_dir, events_dir = sys.argv[1], sys.argv[4]
layers, steps = json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.path[:0] = [function_dir, *layers]
import app
assert not any("site-packages" in p for p in sys.path), sys.path
built = (function_dir, *layers)
loaded = [m for m in list(sys.modules.values())
          if (getattr(m, "__file__", None) or "").startswith(built)]
sys.path.append(events_dir)
from lambda_events import LAMBDA_CONTEXT, http_api_event

ids = {}
answers = []
for step in steps:
    if "event" in step:
        answers.append({"outcome": app.handler(step["event"], None)})
        continue
    path = step["path"].format_map(collections.defaultdict(lambda: "missing", ids))
    path, _, query = path.partition("?")
    event = http_api_event(step["method"], path, body=step.get("body"),
                           query=step.get("query") or dict(urllib.parse.parse_qsl(query)) or None,
                           headers=step.get("headers"), route_key=step.get("route_key"))
    result = app.handler(event, LAMBDA_CONTEXT)
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    raw = result.get("body") or ""
    if headers.get("content-type", "").startswith("application/json"):
        body = json.loads(raw)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict):
            ids.update({k: data[k] for k in ("id", "file_id", "session_id", "audio_url")
                        if isinstance(data.get(k), str)})
    else:
        size = len(base64.b64decode(raw)) if result.get("isBase64Encoded") else len(raw.encode())
        body = {"bytes": size}
    answers.append({"status": result["statusCode"], "content_type": headers.get("content-type"),
                    "body": body})
missing = sorted(m.__name__ for m in loaded
                 if m.__file__.endswith(".py") and not os.path.exists(m.__cached__))
print(json.dumps({"answers": answers, "loaded_from_build": len(loaded),
                  "without_bytecode": missing}))
"""


def invoke_built(build: Path, function: str, steps: list[Step], env: dict[str, str],
                 events_dir: Path) -> dict[str, Any]:
    """Runs `steps` (HTTP API events, or raw `event`s) against the built function in a fresh
    Python 3.12; answers each response, and which built modules lacked bytecode."""
    folder = function_dir(function, build)
    layers = [str(path) for path in layer_paths(function, build)]
    done = subprocess.run(
        [python312(), "-I", "-S", "-B", "-c", _PROBE, str(folder), json.dumps(layers),
         json.dumps(steps), str(events_dir)],
        cwd=folder, env={**env, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True,
        text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def lambda_env(redis_url: str, key_prefix: str, tmp_path: Path) -> dict[str, str]:
    """A Lambda-like environment: nothing of the test process's, only the function's settings."""
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": key_prefix, "PATH": "/usr/bin:/bin",
            "AUDIO_DIR": str(tmp_path / "audio"), "DATA_DIR": str(tmp_path / "data"),
            "HOME": str(tmp_path), "LANG": "C.UTF-8"}


@pytest.fixture(scope="session")
def events_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("events")
    (folder / "lambda_events.py").write_text((ROOT / "tests" / "support" / "lambda_events.py").read_text())
    return folder


def _statuses(result: dict[str, Any]) -> list[int]:
    return [answer["status"] for answer in result["answers"]]


def test_characters_crud_from_the_build(sam_build: Path, lambda_env: dict[str, str],
                                        events_dir: Path) -> None:
    item = "/api/characters/{id}"
    route = "{method} /api/characters/{{character_id}}"
    steps: list[Step] = [
        {"method": "POST", "path": "/api/characters", "body": {"name": "민지", "persona": "밝은 소녀"}},
        {"method": "GET", "path": item, "route_key": route.format(method="GET")},
        {"method": "PATCH", "path": item, "route_key": route.format(method="PATCH"),
         "body": {"persona": "조용한 소녀"}},
        {"method": "GET", "path": "/api/characters", "query": {"limit": "5"}},
        {"method": "DELETE", "path": item, "route_key": route.format(method="DELETE")},
        {"method": "GET", "path": item, "route_key": route.format(method="GET")},
        {"method": "POST", "path": "/api/characters", "body": {"persona": "no name"}},
    ]
    result = invoke_built(sam_build, "characters", steps, lambda_env, events_dir)
    assert _statuses(result) == [201, 200, 200, 200, 200, 404, 422], result
    created, fetched, changed, listed = (a["body"]["data"] for a in result["answers"][:4])
    assert fetched["name"] == "민지" and changed["persona"] == "조용한 소녀"
    assert created["id"] in [c["id"] for c in listed["items"]]
    assert result["answers"][6]["body"]["success"] is False
    assert result["without_bytecode"] == [] and result["loaded_from_build"] > 100


def test_chat_turn_from_the_build_on_the_real_llm(sam_build: Path, lambda_env: dict[str, str],
                                                  events_dir: Path, llm_server: Any) -> None:
    env = {**lambda_env, "LLM_BASE_URL": llm_server.base_url, "LLM_SERVICE": "vllm",
           "DEFAULT_MODEL": llm_server.model_alias}
    session = "/api/chat/sessions/{session_id}"
    steps: list[Step] = [
        {"method": "POST", "path": "/api/chat", "body": {
            "messages": [{"role": "user", "content": "Hello! Who are you?"}],
            "persona": "A cheerful barista", "max_tokens": 24}},
        {"method": "GET", "path": session, "route_key": "GET /api/chat/sessions/{session_id}"},
        {"method": "DELETE", "path": session, "route_key": "DELETE /api/chat/sessions/{session_id}"},
        {"method": "POST", "path": "/api/chat", "body": {"messages": "hello"}},
    ]
    result = invoke_built(sam_build, "chat", steps, env, events_dir)
    assert _statuses(result) == [200, 200, 200, 422], result
    reply = result["answers"][0]["body"]["data"]
    assert reply["content"].strip()
    messages = result["answers"][1]["body"]["data"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert result["without_bytecode"] == []


def test_tts_speaks_with_espeak_from_the_build(sam_build: Path, lambda_env: dict[str, str],
                                               events_dir: Path) -> None:
    steps: list[Step] = [
        {"method": "POST", "path": "/api/tts", "body": {"text": "안녕하세요. 반갑습니다."}},
        {"method": "GET", "path": "{audio_url}", "route_key": "GET /api/audio/{file_id}"},
        {"method": "GET", "path": "/api/audio/{file_id}", "route_key": "GET /api/audio/{file_id}"},
        {"method": "POST", "path": "/api/tts", "body": {"text": " "}},
    ]
    result = invoke_built(sam_build, "tts", steps, lambda_env, events_dir)
    assert _statuses(result) == [200, 200, 404, 400], result  # the bare id is no link
    assert result["answers"][0]["body"]["data"]["duration"] > 0.3
    audio = result["answers"][1]
    assert audio["content_type"] == "audio/wav" and audio["body"]["bytes"] > 10_000
    assert result["without_bytecode"] == []


def test_health_models_voices_and_summarizer_from_the_build(
        sam_build: Path, lambda_env: dict[str, str], events_dir: Path, llm_server: Any) -> None:
    env = {**lambda_env, "LLM_BASE_URL": llm_server.base_url, "LLM_SERVICE": "vllm",
           "DEFAULT_MODEL": llm_server.model_alias,
           "REDIS_URL": lambda_env["REDIS_URL"] + "?password=hunter2"}
    health = invoke_built(sam_build, "health", [{"method": "GET", "path": "/api/health"}], env,
                          events_dir)
    answer = health["answers"][0]
    assert answer["status"] == 200, answer
    assert answer["body"]["data"]["checks"]["redis"] == {"status": "ok"}
    assert "://" not in json.dumps(answer["body"]) and "hunter2" not in json.dumps(answer["body"])

    models = invoke_built(sam_build, "models", [{"method": "GET", "path": "/api/chat/models"}],
                          env, events_dir)
    assert _statuses(models) == [200], models
    assert llm_server.model_alias in json.dumps(models["answers"][0]["body"])

    voices = invoke_built(sam_build, "voices", [{"method": "GET", "path": "/api/tts/voices"}],
                          lambda_env, events_dir)
    assert _statuses(voices) == [200]
    assert voices["answers"][0]["body"]["data"][0]["id"] == "default"

    summarizer = invoke_built(
        sam_build, "summarizer",
        [{"event": {"kind": "summary", "session_id": "nobody"}}, {"event": {"kind": "other"}},
         {"event": {"kind": "archive"}}],
        lambda_env, events_dir)
    summary, other, archive = (a["outcome"] for a in summarizer["answers"])
    assert [summary["outcome"], other["outcome"]] == ["gone", "invalid_event"]
    assert archive["kind"] == "archive"
    assert {"archived", "expired", "skipped", "failed"} <= set(archive), archive
    for result in (health, models, voices, summarizer):
        assert result["without_bytecode"] == []


def test_users_and_openai_functions_from_the_build(
        sam_build: Path, lambda_env: dict[str, str], events_dir: Path, llm_server: Any) -> None:
    env = {**lambda_env, "LLM_BASE_URL": llm_server.base_url, "LLM_SERVICE": "vllm",
           "DEFAULT_MODEL": llm_server.model_alias}
    users = invoke_built(sam_build, "users", [
        {"method": "PUT", "path": "/api/users/me/persona", "body": {"name": "철수"}},
        {"method": "GET", "path": "/api/users/me/persona"}], env, events_dir)
    assert _statuses(users) == [200, 200], users
    assert users["answers"][1]["body"]["data"]["name"] == "철수"
    openai = invoke_built(sam_build, "openai_api", [
        {"method": "GET", "path": "/v1/models"},
        {"method": "POST", "path": "/v1/chat/completions",
         "body": {"model": llm_server.model_alias, "n": 2,
                  "messages": [{"role": "user", "content": "hi"}]}},
        {"method": "POST", "path": "/v1/audio/speech",
         "body": {"model": "tts-1", "input": "Hello.", "voice": "default", "response_format": "wav"}},
    ], env, events_dir)
    assert _statuses(openai) == [200, 400, 200], openai
    assert llm_server.model_alias in json.dumps(openai["answers"][0]["body"])
    assert openai["answers"][1]["body"]["error"]["type"] == "invalid_request_error"
    speech = openai["answers"][2]
    assert speech["content_type"].startswith("audio/") and speech["body"]["bytes"] > 1000
    for result in (users, openai):
        assert result["without_bytecode"] == []


def test_built_layers_carry_runtime_bytecode_and_speech_apart(sam_build: Path) -> None:
    layer = sam_build / "RoleplayLayer" / "python"
    assert (layer / "roleplay" / "__init__.py").is_file()  # on /opt/python, not /opt/python/python
    cached = layer / "roleplay" / "core" / "__pycache__" / "settings.cpython-312.pyc"
    flags = int.from_bytes(cached.read_bytes()[4:8], "little")
    assert flags == 0b01, "hash-based, unchecked: valid whatever mtimes the zip gets"
    assert not (layer / "espeakng_loader").exists() and not (layer / "boto3").exists()
    assert (sam_build / "SpeechLayer" / "python" / "espeakng_loader").is_dir()
    assert (sam_build / "HealthFunction" / "__pycache__" / "app.cpython-312.pyc").is_file()
    total = size_mb(sam_build / "RoleplayLayer") + size_mb(sam_build / "SpeechLayer")
    assert total < 250, "Lambda's limit for a function and its layers, unzipped"


def test_built_streaming_chat_refuses_an_unsigned_request(sam_build: Path,
                                                          lambda_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    from tests.support.stream_app_process import run_stream_app

    with run_stream_app(sam_build, {**lambda_env, "JWT_SECRET": SECRET}, tmp_path) as (url, http):
        unsigned = http.post(f"{url}/api/chat", json={"messages": []})
        docs = http.get(f"{url}/docs")
        signed = http.post(f"{url}/api/chat", json={"messages": "hello"}, headers=bearer())
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "unauthorized"
    assert unsigned.headers["www-authenticate"] == "Bearer"
    assert docs.status_code == 401
    assert signed.status_code == 422  # past the guard: the chat app's own validation


def test_built_streaming_chat_will_not_start_without_a_jwt_key(sam_build: Path,
                                                               lambda_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    from tests.support.stream_app_process import start_failure

    output = start_failure(sam_build, lambda_env, tmp_path)
    assert "JWT_SECRET" in output


def _names(lines: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.strip().startswith("#")}


def test_layer_requirements_match_the_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    layers = [(ROOT / "layers" / name / "requirements.txt").read_text().splitlines()
              for name in ("roleplay", "speech")]
    assert _names(layers[0]) | _names(layers[1]) == (_names(project) - {"boto3"}) | {"uvicorn"}
    assert "espeakng-loader" not in _names(layers[0])


def test_python312_is_found_or_named_clearly() -> None:
    found = subprocess.run(["sh", str(ROOT / "infra" / "find-python3.12")], capture_output=True,
                           text=True)
    assert found.returncode == 0, found.stderr
    assert python312() == found.stdout.strip()
    bare = {"PATH": "/nonexistent", "HOME": "/nonexistent", "PYENV_ROOT": "/nonexistent",
            "PYTHON312": "/usr/bin/true"}
    missing = subprocess.run(["/bin/sh", str(ROOT / "infra" / "find-python3.12")],
                             capture_output=True, text=True, env=bare)
    if not any(Path(p).exists() for p in ("/usr/local/bin/python3.12", "/usr/bin/python3.12")):
        assert missing.returncode != 0
        assert "No Python 3.12 found" in missing.stderr and "PYTHON312" in missing.stderr

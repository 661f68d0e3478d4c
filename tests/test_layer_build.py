"""Every function works from the built layer alone, as in Lambda, and the layer's
requirements stay in step with the project's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.build_layer import REQUIREMENTS, ROOT, build, size_mb

# function → (the event it is invoked with, the status or outcome it must answer)
CASES: dict[str, tuple[dict[str, object] | None, object]] = {
    "health": ({"method": "GET", "path": "/api/health"}, 200),
    "characters": ({"method": "GET", "path": "/api/characters"}, 200),
    "models": ({"method": "GET", "path": "/api/chat/models"}, 503),
    "chat": ({"method": "GET", "path": "/api/chat/sessions/nobody",
              "route_key": "GET /api/chat/sessions/{session_id}"}, 404),
    "tts": ({"method": "POST", "path": "/api/tts", "body": {"text": "안녕하세요."}}, 200),
    "voices": ({"method": "GET", "path": "/api/tts/voices"}, 200),
    "users": ({"method": "GET", "path": "/api/users/me/persona"}, 200),
    "summarizer": (None, "gone"),
    "openai_api": ({"method": "POST", "path": "/v1/chat/completions",
                    "body": {"model": "m", "messages": [], "n": 2}}, 400),
}

# Runs in `python -I -S`: no site-packages, no environment paths; only the function's
# folder and the layer, as Lambda has /var/task and /opt/python.
_PROBE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
sys.path.insert(0, sys.argv[4])  # only for the event builder, imported after the app
import app
assert all(not p.endswith("site-packages") for p in sys.path), sys.path
spec = json.loads(sys.argv[3])
if spec is None:
    print(json.dumps(app.handler({"kind": "summary", "session_id": "nobody"}, None)))
else:
    from tests.lambda_events import LAMBDA_CONTEXT, http_api_event
    event = http_api_event(spec["method"], spec["path"], body=spec.get("body"),
                           route_key=spec.get("route_key"))
    result = app.handler(event, LAMBDA_CONTEXT)
    print(json.dumps({"statusCode": result["statusCode"]}))
"""


@pytest.fixture(scope="module")
def layer_python() -> Path:
    python = build(ROOT / "build" / "layer")
    assert size_mb(python.parent) < 250, "Lambda's limit for a function and its layers"
    return python


@pytest.mark.parametrize("function", sorted(CASES))
def test_each_function_runs_from_the_built_layer_alone(layer_python: Path, function: str,
                                                       redis_url: str, key_prefix: str,
                                                       tmp_path: Path) -> None:
    spec, expected = CASES[function]
    env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": key_prefix,
           "AUDIO_DIR": str(tmp_path / "audio"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    tests_root = tmp_path / "probe"
    (tests_root / "tests").mkdir(parents=True)
    (tests_root / "tests" / "__init__.py").touch()
    (tests_root / "tests" / "lambda_events.py").write_text(
        (ROOT / "tests" / "lambda_events.py").read_text())
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROBE, str(ROOT / "functions" / function),
         str(layer_python), json.dumps(spec), str(tests_root)],
        cwd=ROOT / "functions" / function, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer.get("statusCode", answer.get("outcome")) == expected, answer


def _names(lines: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.strip().startswith("#")}


def test_layer_requirements_match_the_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    layer = REQUIREMENTS.read_text().splitlines()
    assert _names(layer) == (_names(project) - {"boto3"}) | {"uvicorn"}

"""What a function's cold start imports (issue 30: each cold start <= 300 ms).

A module that only some requests need is imported by the first request that needs it,
not by the handler's import. Each check runs in a fresh interpreter, as a cold start
does, and names what must not be in `sys.modules` once the handler is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.sam_build import ROOT

NEVER = ("pydantic_settings", "click")
"""No function imports these: the settings read the environment themselves; click is
uvicorn's, which only the streaming chat's web adapter runs (httpx's command line would
import it: `roleplay.web.cold_start`)."""
NOT_AT_IMPORT: dict[str, tuple[str, ...]] = {
    # the turn (LLM dialect, prompt fitting, speech): only the routes that take one; the
    # LLM's client and httpx: the first request that asks the upstream (some 40 ms)
    "chat": ("roleplay.chat.service", "roleplay.chat.stream",
             "roleplay.chat.control.generated_turns", "roleplay.chat.preparation",
             "roleplay.speech.tts_service", "roleplay.llm.client", "roleplay.llm.dialect",
             "httpx"),
    # only the id pattern (roleplay.characters.ids), not the character models
    "tts": ("roleplay.characters.model",),
    "voices": ("roleplay.characters.model", "redis"),
    "summarizer": ("roleplay.characters.model",),
}
FUNCTIONS = ("characters", "chat", "health", "models", "openai_api", "summarizer", "tts",
             "users", "voices")

_PROBE = """
import importlib, json, sys
importlib.import_module(f"functions.{sys.argv[1]}.app")
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(function: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, function], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_cold_start_imports_only_what_its_first_requests_need(function: str) -> None:
    loaded = imported_by(function)
    assert "roleplay.core.settings" in loaded  # the probe saw the real import
    assert not loaded & {*NEVER, *NOT_AT_IMPORT.get(function, ())}


def test_every_function_is_checked() -> None:
    assert set(FUNCTIONS) == {path.parent.name for path in (ROOT / "functions").glob("*/app.py")}


_COLLECTOR = """
import gc, importlib, json, sys
if sys.argv[1] == "off":
    gc.disable()
seen = []
for function in ("voices", "models"):
    importlib.import_module(f"functions.{function}.app")
    seen.append([gc.isenabled(), gc.get_freeze_count()])
print(json.dumps(seen))
"""


def collector_after_imports(collector: str) -> list[list[int]]:
    done = subprocess.run([sys.executable, "-c", _COLLECTOR, collector], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_first_handler_import_runs_without_collections_then_freezes_what_it_built() -> None:
    (enabled, frozen), (enabled_after_second, frozen_after_second) = collector_after_imports("on")
    assert enabled and frozen > 20_000
    assert enabled_after_second and frozen_after_second <= frozen  # only the first one froze


def test_a_collector_disabled_before_stays_disabled() -> None:
    assert collector_after_imports("off") == [[False, 0], [False, 0]]


_OPENAPI = """
import importlib, json, sys
if sys.argv[2] == "fastapi-first":
    import fastapi
from pydantic import BaseModel
from roleplay.web import deferred_openapi_models
module = importlib.import_module(f"functions.{sys.argv[1]}.app")
deferred = deferred_openapi_models.deferred()
print(json.dumps({"deferred": deferred, "finders_left": deferred_openapi_models._finder in sys.meta_path,
                  "config": dict(BaseModel.model_config), "openapi": module.app.openapi()}))
"""


def openapi_after_import(function: str, order: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _OPENAPI, function, order], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_handler_import_leaves_fastapis_openapi_models_unbuilt_and_the_document_unchanged() -> None:
    cold, warm = openapi_after_import("chat", "handler-first"), openapi_after_import("chat", "fastapi-first")
    assert cold["deferred"] and not warm["deferred"]
    assert cold["finders_left"] is warm["finders_left"] is False
    assert cold["config"] == warm["config"] == {}  # BaseModel's own config is back
    assert cold["openapi"] == warm["openapi"]

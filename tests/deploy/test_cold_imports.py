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

NEVER = ("pydantic_settings",)
"""No function imports these: the settings read the environment themselves."""
NOT_AT_IMPORT: dict[str, tuple[str, ...]] = {
    # the turn (LLM dialect, prompt fitting, speech): only the routes that take one
    "chat": ("roleplay.chat.service", "roleplay.chat.stream",
             "roleplay.chat.control.generated_turns", "roleplay.chat.preparation",
             "roleplay.speech.tts_service"),
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

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

NOT_AT_IMPORT: dict[str, tuple[str, ...]] = {
    # the turn (LLM dialect, prompt fitting, speech): only the routes that take one
    "chat": ("roleplay.chat.service", "roleplay.chat.stream",
             "roleplay.chat.control.generated_turns", "roleplay.chat.preparation",
             "roleplay.speech.tts_service"),
}

_PROBE = """
import importlib, json, sys
importlib.import_module(f"functions.{sys.argv[1]}.app")
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(function: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, function], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", sorted(NOT_AT_IMPORT))
def test_a_cold_start_imports_only_what_its_first_requests_need(function: str) -> None:
    loaded = imported_by(function)
    assert "fastapi" in loaded or function == "summarizer"  # the probe saw the real import
    assert not loaded & set(NOT_AT_IMPORT[function])

"""Speech's modules in layers: a lower module never imports a higher one, not even lazily.

speech_audio and job_models are the bottom; the engines sit on speech_audio; `speech`
(the engine choice) on the engines; tts_service on those; background_jobs dispatches
to tts_service. Read from the source, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import roleplay

PACKAGE = Path(roleplay.__file__).parent
FORBIDDEN = {
    "speech_audio": {"speech", "espeak_engine", "gpt_sovits_client", "tts_service", "speech_pipeline",
                     "background_jobs", "audio_store"},
    "job_models": {"background_jobs", "tts_service", "summarizer", "chat_service"},
    "espeak_engine": {"speech", "tts_service", "speech_pipeline"},
    "gpt_sovits_client": {"speech", "tts_service", "speech_pipeline"},
    "audio_store": {"speech", "tts_service", "speech_pipeline", "background_jobs"},
    "tts_service": {"background_jobs", "speech_pipeline", "chat_service", "chat_stream"},
}


def _imported(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.removeprefix("roleplay.") for name in names if name.startswith("roleplay.")}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_a_lower_speech_module_never_imports_a_higher_one(module: str) -> None:
    assert not _imported(module) & FORBIDDEN[module]

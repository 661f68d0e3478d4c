"""The voices Server A can speak with: server-side configuration, never client paths.

`VOICES_FILE` (YAML or JSON) lists them; without it there is one `default` voice.
Clients see ids and descriptions only; reference-audio paths and weights stay here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from roleplay.characters.ids import ID_PATTERN
from roleplay.core.errors import NotConfigured, NotFound
from roleplay.core.settings import get_settings

DEFAULT_VOICE_ID = "default"


class Voice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]
    name: str
    language: str = "ko"
    gender: str | None = None
    ref_audio_path: str | None = None
    prompt_text: str | None = None
    prompt_lang: str | None = None
    gpt_weights: str | None = None
    sovits_weights: str | None = None


class PublicVoice(BaseModel):
    id: str
    name: str
    language: str
    gender: str | None = None


BUILT_IN = (Voice(id=DEFAULT_VOICE_ID, name="기본 음성", language="ko", gender="female"),)


@lru_cache(maxsize=4)
def _load(path: str | None) -> tuple[Voice, ...]:
    if path is None:
        return BUILT_IN
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ValueError(str(error)) from None
        else:
            raw = json.loads(text)
        entries = raw.get("voices", raw) if isinstance(raw, dict) else raw
        return tuple(Voice.model_validate(entry) for entry in entries)
    except (OSError, ValueError, ValidationError, TypeError, AttributeError, ImportError) as error:
        raise NotConfigured(f"VOICES_FILE {path!r} is unreadable: {error}") from None


def voices() -> tuple[Voice, ...]:
    return _load(get_settings().voices_file)


def public_voices() -> list[PublicVoice]:
    return [PublicVoice.model_validate(v.model_dump()) for v in voices()]


def voice_by_id(voice_id: str) -> Voice:
    """The configured voice with this id; 404 for any other (ids only, never paths)."""
    for voice in voices():
        if voice.id == voice_id:
            return voice
    raise NotFound(f"no voice with id {voice_id!r}; GET /api/tts/voices lists them",
                   code="voice_not_found")


def voice_for_character(voice_id: str | None) -> Voice:
    """A character's voice, falling back to `default` (or the first voice) when its own
    is not configured here, so a character never goes mute over a voices-file change."""
    configured = voices()
    by_id = {voice.id: voice for voice in configured}
    return by_id.get(voice_id or DEFAULT_VOICE_ID) or by_id.get(DEFAULT_VOICE_ID) or configured[0]

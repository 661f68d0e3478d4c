"""Characters: who the user talks to, their persona, scenario and voice.

Lengths are capped so one character can never blow the LLM's context or Redis
memory; unknown fields are refused so a typo in a client is a 422, not silent loss.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

CharacterId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
VoiceId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Persona = Annotated[str, StringConstraints(max_length=8000)]
Dialogue = Annotated[str, StringConstraints(max_length=8000)]
FirstMessage = Annotated[str, StringConstraints(max_length=2000)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
Tags = Annotated[list[Tag], Field(max_length=20)]


class Scenario(BaseModel):
    """Where the role-play happens, as the design document's `scenario` field."""

    model_config = ConfigDict(extra="forbid")

    opponent: Annotated[str, StringConstraints(max_length=200)] | None = None
    situation: Annotated[str, StringConstraints(max_length=2000)] | None = None
    background: Annotated[str, StringConstraints(max_length=4000)] | None = None


class CharacterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    persona: Persona = ""
    scenario: Scenario = Field(default_factory=Scenario)
    sample_dialogue: Dialogue = ""
    first_message: FirstMessage = ""
    voice_id: VoiceId = "default"
    tags: Tags = Field(default_factory=list)


class CharacterUpdate(BaseModel):
    """A partial update: only the fields present and not null change (`""` or `[]` clears)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    persona: Persona | None = None
    scenario: Scenario | None = None
    sample_dialogue: Dialogue | None = None
    first_message: FirstMessage | None = None
    voice_id: VoiceId | None = None
    tags: Tags | None = None


class Character(CharacterCreate):
    id: CharacterId
    owner: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def new(cls, fields: CharacterCreate, owner: str) -> Character:
        now = datetime.now(UTC)
        return cls(
            id=uuid.uuid4().hex, owner=owner, created_at=now, updated_at=now,
            **fields.model_dump(),
        )

    def updated(self, change: CharacterUpdate) -> Character:
        """This character with `change` applied; a null leaves its field as it was (a name
        can never be null), and the result is validated, so no patch can store a character
        that would fail to load."""
        patch = {name: value for name, value in change.model_dump(exclude_unset=True).items()
                 if value is not None}
        return Character.model_validate(
            {**self.model_dump(), **patch, "updated_at": datetime.now(UTC)})


class CharacterPage(BaseModel):
    items: list[Character]
    next_cursor: str | None = None

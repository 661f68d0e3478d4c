"""Characters: who the user talks to, their persona, scenario and voice.

A character holds a whole Character Card V2/V3 without loss (`roleplay.cards` maps
the formats). Texts that reach a prompt are capped in tokens, what the model pays
for, with a character cap (four per token) only as a bound on memory; unknown
fields are refused so a typo in a client is a 422, not silent loss.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo

from roleplay.characters.ids import ID_PATTERN as ID_PATTERN  # re-exported: its old home
from roleplay.characters.lorebook.model import CharacterBook
from roleplay.core.token_counter import count_tokens

CharacterId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
VoiceId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Persona = Annotated[str, StringConstraints(max_length=8000)]
"""A persona sent with a chat request (a character's own is `CardText`)."""

CARD_TEXT_MAX_TOKENS = 16_000
"""Per prompt text of a character, in cl100k tokens (Korean costs about one a syllable):
long cards fit, and one field cannot fill a large context on its own. The prompt's own
budget (`context_too_small`) still applies to the whole persona."""


STORED: dict[str, Any] = {"stored": True}
"""The validation context of a character read back from its store: its texts' tokens
were counted when it was written, and a read (every turn, every list page) does not pay
for counting them again."""


def _within(max_tokens: int) -> AfterValidator:
    def check(value: str, info: ValidationInfo) -> str:
        if info.context and info.context.get("stored"):
            return value
        if value and count_tokens(value) > max_tokens:
            raise ValueError(f"longer than {max_tokens} tokens")
        return value
    return AfterValidator(check)


CardText = Annotated[str, StringConstraints(max_length=64_000),
                     _within(CARD_TEXT_MAX_TOKENS)]
Dialogue = CardText
SceneText = Annotated[str, StringConstraints(max_length=32_000), _within(4000)]
FirstMessage = SceneText
Greetings = Annotated[list[FirstMessage], Field(max_length=100)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Tags = Annotated[list[Tag], Field(max_length=100)]


class Asset(BaseModel):
    """A V3 card asset; kept as listed, its bytes are not stored."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, StringConstraints(max_length=100)]
    uri: Annotated[str, StringConstraints(max_length=4096)]
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    ext: Annotated[str, StringConstraints(max_length=20)] = ""


class Scenario(BaseModel):
    """Where the role-play happens, as the design document's `scenario` field."""

    model_config = ConfigDict(extra="forbid")

    opponent: Annotated[str, StringConstraints(max_length=200)] | None = None
    situation: SceneText | None = None
    background: SceneText | None = None


class CharacterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    persona: CardText = ""
    scenario: Scenario = Field(default_factory=Scenario)
    sample_dialogue: Dialogue = ""
    first_message: FirstMessage = ""
    voice_id: VoiceId = "default"
    tags: Tags = Field(default_factory=list)
    # Character Card V2
    alternate_greetings: Greetings = Field(default_factory=list)
    system_prompt: CardText = Field(default="", description="Replaces our instructions; "
                                    "`{{original}}` in it stands for them.")
    post_history_instructions: CardText = ""
    creator_notes: Annotated[str, StringConstraints(max_length=64_000)] = ""
    creator: ShortText = ""
    character_version: ShortText = ""
    character_book: CharacterBook | None = None
    extensions: dict[str, Any] = Field(
        default_factory=dict, description="Other tools' card extensions, kept untouched.")
    # Character Card V3
    nickname: Annotated[str, StringConstraints(max_length=100)] | None = None
    group_only_greetings: Greetings = Field(default_factory=list)
    assets: Annotated[list[Asset], Field(max_length=1000)] | None = None
    source: Annotated[list[Annotated[str, StringConstraints(max_length=4096)]],
                      Field(max_length=100)] | None = None
    creation_date: int | None = None
    modification_date: int | None = None
    creator_notes_multilingual: dict[str, str] | None = None


class CharacterUpdate(BaseModel):
    """A partial update: only the fields present and not null change (`""` or `[]` clears)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    persona: CardText | None = None
    scenario: Scenario | None = None
    sample_dialogue: Dialogue | None = None
    first_message: FirstMessage | None = None
    voice_id: VoiceId | None = None
    tags: Tags | None = None
    alternate_greetings: Greetings | None = None
    system_prompt: CardText | None = None
    post_history_instructions: CardText | None = None
    creator_notes: Annotated[str, StringConstraints(max_length=64_000)] | None = None
    creator: ShortText | None = None
    character_version: ShortText | None = None
    character_book: CharacterBook | None = None
    extensions: dict[str, Any] | None = None
    nickname: Annotated[str, StringConstraints(max_length=100)] | None = None
    group_only_greetings: Greetings | None = None


class Character(CharacterCreate):
    id: CharacterId
    owner: str
    created_at: datetime
    updated_at: datetime
    has_image: bool = Field(default=False, description="An image came with the imported card; "
                            "the PNG export embeds the card in it.")

    @property
    def display_name(self) -> str:
        """Who `{{char}}` is: the V3 nickname when set, else the name."""
        return self.nickname or self.name

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

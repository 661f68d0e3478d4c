"""A lorebook as Character Card V2/V3 define it (`character_book`, `lorebook_v3`'s data).

Fields the specs name are typed; anything else another frontend writes is kept as it
came (`extra="allow"`), so a card survives import and export without loss.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

LoreKey = Annotated[str, StringConstraints(max_length=1000)]
LoreText = Annotated[str, StringConstraints(max_length=100_000)]


class LoreEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    keys: Annotated[list[LoreKey], Field(max_length=500)] = Field(default_factory=list)
    content: LoreText = ""
    extensions: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    insertion_order: int | float = 0
    case_sensitive: bool | None = None
    name: str | None = None
    priority: int | float | None = None
    id: int | str | None = None
    comment: str | None = None
    selective: bool | None = None
    secondary_keys: Annotated[list[LoreKey], Field(max_length=500)] | None = None
    constant: bool | None = None
    position: str | None = None
    """`before_char` or `after_char`; anything else reads as `before_char`."""
    use_regex: bool | None = None

    @property
    def rank(self) -> float:
        """What the budget keeps first: `priority` when given, else `insertion_order`."""
        return float(self.priority if self.priority is not None else self.insertion_order)


class CharacterBook(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    description: str | None = None
    scan_depth: Annotated[int, Field(ge=0, le=1000)] | None = None
    token_budget: Annotated[int, Field(ge=0)] | None = None
    recursive_scanning: bool | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: Annotated[list[LoreEntry], Field(max_length=5000)] = Field(default_factory=list)

"""Card JSON (V1, V2, V3, and standalone `lorebook_v3`) to our character and back.

Import maps `description` + `personality` to `persona`, `scenario` to the scenario's
situation, `first_mes` to `first_message` and `mes_example` to `sample_dialogue`; our
own fields (voice, opponent, background) travel in `extensions["serverb"]`, and every
other extension stays as it came. Export writes a V3 card (and its V2 twin for the
PNG's `chara` chunk) that imports back to the same character.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from roleplay.characters.cards.errors import invalid_card
from roleplay.characters.lorebook.model import CharacterBook
from roleplay.characters.model import ID_PATTERN, Character, CharacterCreate, Scenario
from roleplay.characters.storable import check_tree

EXTENSION_KEY = "serverb"
"""Our namespace in a card's `extensions`, as the V2 spec asks of every tool."""
V3_ONLY = ("nickname", "group_only_greetings", "assets", "source", "creation_date",
           "modification_date", "creator_notes_multilingual")
M = TypeVar("M", bound=BaseModel)
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")


def load_json(raw: bytes | str, max_depth: int, what: str = "card") -> Any:
    """The parsed document, once it is one a stored character can hold (`storable`)."""
    try:
        document = json.loads(raw)
    except RecursionError:
        raise invalid_card(f"the {what} nests deeper than CARD_MAX_DEPTH={max_depth} objects "
                           "and lists", code="card_too_deep") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise invalid_card(f"the {what} is not valid UTF-8 JSON: {error}",
                           code="invalid_card_json") from None
    check_tree(document, max_depth=max_depth, what=what)
    return document


def card_data(card: Any) -> dict[str, Any]:
    """The card's fields, whichever spec it follows (V1 has them at the top level)."""
    if not isinstance(card, dict):
        raise invalid_card("a card is a JSON object", code="invalid_card_json")
    spec = card.get("spec")
    if spec is None:
        if isinstance(card.get("name"), str):
            return {name: card.get(name) for name in V1_FIELDS}
        raise invalid_card("not a character card: no spec and no V1 name",
                           code="unknown_card_spec")
    if spec == "lorebook_v3":
        raise invalid_card("this is a lorebook, not a character: attach it with "
                           "PUT /api/characters/{id}/lorebook", code="unknown_card_spec")
    if spec not in ("chara_card_v2", "chara_card_v3"):
        raise invalid_card(f"unknown card spec {str(spec)[:40]!r}; expected chara_card_v2 or "
                           "chara_card_v3", code="unknown_card_spec")
    if spec == "chara_card_v3" and not _major_version_is(card.get("spec_version"), 3):
        raise invalid_card(f"unsupported chara_card_v3 spec_version "
                           f"{str(card.get('spec_version'))[:20]!r}", code="unknown_card_spec")
    data = card.get("data")
    if not isinstance(data, dict):
        raise invalid_card(f"a {spec} card keeps its fields in an object named data",
                           code="invalid_card_json")
    return data


def _major_version_is(version: Any, major: int) -> bool:
    """V3 says compare spec_version as a float: any 3.x reads as V3."""
    try:
        return int(float(version)) == major
    except (TypeError, ValueError):
        return False


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _seconds(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _persona(description: str, personality: str) -> str:
    return "\n\n".join(part for part in (description, personality) if part)


def _ours(extensions: dict[str, Any]) -> dict[str, Any]:
    ours = extensions.get(EXTENSION_KEY)
    return ours if isinstance(ours, dict) else {}


def character_fields(data: dict[str, Any]) -> CharacterCreate:
    """Our character from a card's fields; a field that cannot be held is a 400 naming it."""
    extensions = data.get("extensions")
    extensions = dict(extensions) if isinstance(extensions, dict) else {}
    ours = _ours(extensions)
    extensions.pop(EXTENSION_KEY, None)
    voice = ours.get("voice_id")
    fields: dict[str, Any] = {
        "name": _text(data, "name"),
        "persona": _persona(_text(data, "description"), _text(data, "personality")),
        "scenario": Scenario(
            situation=_text(data, "scenario") or None,
            opponent=ours.get("opponent") if isinstance(ours.get("opponent"), str) else None,
            background=ours.get("background") if isinstance(ours.get("background"), str) else None),
        "first_message": _text(data, "first_mes"),
        "sample_dialogue": _text(data, "mes_example"),
        "voice_id": voice if isinstance(voice, str) and re.match(ID_PATTERN, voice) else "default",
        "tags": [tag for tag in (t.strip() for t in _strings(data.get("tags"))) if tag],
        "alternate_greetings": _strings(data.get("alternate_greetings")),
        "system_prompt": _text(data, "system_prompt"),
        "post_history_instructions": _text(data, "post_history_instructions"),
        "creator_notes": _text(data, "creator_notes"),
        "creator": _text(data, "creator"),
        "character_version": _text(data, "character_version"),
        "character_book": data.get("character_book") or None,
        "extensions": extensions,
        "nickname": data.get("nickname") if isinstance(data.get("nickname"), str) else None,
        "group_only_greetings": _strings(data.get("group_only_greetings")),
        "assets": data.get("assets") if isinstance(data.get("assets"), list) else None,
        "source": _strings(data["source"]) if isinstance(data.get("source"), list) else None,
        "creation_date": _seconds(data.get("creation_date")),
        "modification_date": _seconds(data.get("modification_date")),
        "creator_notes_multilingual": data.get("creator_notes_multilingual")
        if isinstance(data.get("creator_notes_multilingual"), dict) else None,
    }
    return _validated(CharacterCreate, fields, "card")


def _validated(model: type[M], fields: Any, what: str) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or what
        raise invalid_card(f"the {what} cannot be imported: {where}: {first['msg']}",
                           code="invalid_card_field") from None


def _without_nones(model: BaseModel) -> dict[str, Any]:
    """The model as JSON, leaving out typed fields that are unset (null), keeping extras."""
    dumped = model.model_dump(mode="json")
    for name in type(model).model_fields:
        if dumped.get(name) is None:
            dumped.pop(name, None)
    return dumped


def book_json(book: CharacterBook) -> dict[str, Any]:
    dumped = _without_nones(book)
    dumped["entries"] = [_without_nones(entry) for entry in book.entries]
    return dumped


def export_v3(character: Character) -> dict[str, Any]:
    ours: dict[str, Any] = {"voice_id": character.voice_id}
    if character.scenario.opponent is not None:
        ours["opponent"] = character.scenario.opponent
    if character.scenario.background is not None:
        ours["background"] = character.scenario.background
    data: dict[str, Any] = {
        "name": character.name,
        "description": character.persona,
        "personality": "",
        "scenario": character.scenario.situation or "",
        "first_mes": character.first_message,
        "mes_example": character.sample_dialogue,
        "creator_notes": character.creator_notes,
        "system_prompt": character.system_prompt,
        "post_history_instructions": character.post_history_instructions,
        "alternate_greetings": list(character.alternate_greetings),
        "tags": list(character.tags),
        "creator": character.creator,
        "character_version": character.character_version,
        "extensions": {**character.extensions, EXTENSION_KEY: ours},
        "group_only_greetings": list(character.group_only_greetings),
    }
    if character.character_book is not None:
        data["character_book"] = book_json(character.character_book)
    for name in V3_ONLY:
        value = getattr(character, name)
        if value is not None and name not in data:
            data[name] = ([asset.model_dump(mode="json") for asset in value]
                          if name == "assets" else value)
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def export_v2(character: Character) -> dict[str, Any]:
    """The V2 twin for old readers: V3-only fields left out, V1 fields also at the top."""
    data = {k: v for k, v in export_v3(character)["data"].items() if k not in V3_ONLY}
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data,
            **{name: data[name] for name in V1_FIELDS}}


def lorebook(document: Any) -> CharacterBook:
    """A standalone `lorebook_v3` file, or a bare `character_book` object."""
    if isinstance(document, dict) and document.get("spec") == "lorebook_v3":
        document = document.get("data")
    elif isinstance(document, dict) and "spec" in document:
        raise invalid_card(f"unknown lorebook spec {str(document['spec'])[:40]!r}; expected "
                           "lorebook_v3", code="unknown_card_spec")
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise invalid_card("a lorebook is an object with a list of entries",
                           code="invalid_lorebook")
    return _validated(CharacterBook, document, "lorebook")

"""The system prompt that keeps a character in persona, in the design document's format.

A stored character supplies defaults; whatever the request says wins, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from roleplay.characters import Character, Scenario

PersonaLanguage = Literal["ko", "en"]

_LABELS: dict[str, dict[str, str]] = {
    "ko": {
        "intro": "당신은 {name}입니다.",
        "situation": "현재 상황",
        "background": "배경",
        "opponent": "상대방",
        "sample": "예시 대화",
        "rules": "중요 지침:\n"
        "- 캐릭터의 성격과 말투를 일관되게 유지하세요.\n"
        "- 사용자와 자연스럽게 대화하세요.\n"
        "- 캐릭터의 특성을 반영한 응답을 생성하세요.\n"
        "- 이전 대화의 맥락을 고려하여 응답하세요.",
        "opening": "대화는 {name}의 다음 말로 시작되었습니다",
        "continued": "직전에 {name}이(가) 한 말",
        "summary": "[이전 대화 요약]",
    },
    "en": {
        "intro": "You are {name}.",
        "situation": "Current situation",
        "background": "Background",
        "opponent": "Talking with",
        "sample": "Example dialogue",
        "rules": "Important rules:\n"
        "- Keep the character's personality and way of speaking consistent.\n"
        "- Talk with the user naturally.\n"
        "- Answer as this character would.\n"
        "- Take the earlier conversation into account.",
        "opening": "The conversation opened with {name} saying",
        "continued": "What {name} said just before",
        "summary": "[Summary of the conversation so far]",
    },
}


@dataclass(frozen=True)
class RoleplaySetup:
    """Everything the persona prompt is made of, after merging request and character."""

    name: str | None = None
    persona: str | None = None
    scenario: Scenario = field(default_factory=Scenario)
    sample_dialogue: str | None = None

    @classmethod
    def merge(
        cls, character: Character | None, persona: str | None, scenario: Scenario | None
    ) -> RoleplaySetup:
        base = character.scenario if character else Scenario()
        given = scenario or Scenario()
        return cls(
            name=character.name if character else None,
            persona=persona if persona else (character.persona if character else None),
            scenario=Scenario(
                opponent=given.opponent or base.opponent,
                situation=given.situation or base.situation,
                background=given.background or base.background,
            ),
            sample_dialogue=character.sample_dialogue if character else None,
        )


def format_persona_for_roleplay(setup: RoleplaySetup, language: PersonaLanguage = "ko") -> str:
    labels = _LABELS[language]
    parts: list[str] = []
    if setup.name:
        parts.append(labels["intro"].format(name=setup.name))
    if setup.persona and setup.persona.strip():
        parts.append(setup.persona.strip())
    scene = [
        f"{labels[field]}: {value.strip()}"
        for field, value in (("situation", setup.scenario.situation),
                             ("background", setup.scenario.background),
                             ("opponent", setup.scenario.opponent))
        if value and value.strip()
    ]
    if scene:
        parts.append("\n".join(scene))
    if setup.sample_dialogue and setup.sample_dialogue.strip():
        parts.append(f"{labels['sample']}:\n{setup.sample_dialogue.strip()}")
    parts.append(labels["rules"])
    return "\n\n".join(parts)


def opening_note(
    name: str | None, greeting: str, language: PersonaLanguage = "ko", *, continued: bool = False
) -> str:
    """How a character's line that would lead the prompt is told to the model instead:
    the greeting that opened the conversation, or (`continued`) the last line before
    the part of the conversation the prompt shows."""
    who = name or ("캐릭터" if language == "ko" else "the character")
    label = _LABELS[language]["continued" if continued else "opening"]
    return f"{label.format(name=who)}: \"{greeting}\""


def summary_block(summary: str, language: PersonaLanguage = "ko") -> str:
    """The rolling summary as it follows the persona in the system prompt."""
    return f"{_LABELS[language]['summary']}\n{summary.strip()}"

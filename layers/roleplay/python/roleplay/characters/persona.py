"""The system prompt that keeps a character in persona, in the design document's format.

A stored character supplies defaults; whatever the request says wins, field by field.
The user's persona names the other side (`상대방`, and `{{user}}` in card texts) unless
the request's scenario names someone; its description follows that line. A card's
`system_prompt` replaces our instructions (`{{original}}` in it stands for them) and
its `post_history_instructions` close the prompt. Fired lorebook entries sit before or
after the character's description, as each entry's `position` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from roleplay.characters.macros import MacroNames, replace_macros, with_original
from roleplay.characters.model import Character, Scenario

PersonaLanguage = Literal["ko", "en"]

_LABELS: dict[str, dict[str, str]] = {
    "ko": {
        "intro": "당신은 {name}입니다.",
        "situation": "현재 상황",
        "background": "배경",
        "opponent": "상대방",
        "opponent_about": "상대방 소개",
        "user": "사용자",
        "sample": "예시 대화",
        "rules": "중요 지침:\n"
        "- 캐릭터의 성격과 말투를 일관되게 유지하세요.\n"
        "- 사용자와 자연스럽게 대화하세요.\n"
        "- 캐릭터의 특성을 반영한 응답을 생성하세요.\n"
        "- 이전 대화의 맥락을 고려하여 응답하세요.",
        "opening": "대화는 {name}의 다음 말로 시작되었습니다",
        "continued": "직전에 {name}이(가) 한 말",
        "summary": "[이전 대화 요약]",
        "memory": "[기억나는 지난 장면]",
    },
    "en": {
        "intro": "You are {name}.",
        "situation": "Current situation",
        "background": "Background",
        "opponent": "Talking with",
        "opponent_about": "About them",
        "user": "User",
        "sample": "Example dialogue",
        "rules": "Important rules:\n"
        "- Keep the character's personality and way of speaking consistent.\n"
        "- Talk with the user naturally.\n"
        "- Answer as this character would.\n"
        "- Take the earlier conversation into account.",
        "opening": "The conversation opened with {name} saying",
        "continued": "What {name} said just before",
        "summary": "[Summary of the conversation so far]",
        "memory": "[Earlier scenes you remember]",
    },
}


@dataclass(frozen=True)
class RoleplaySetup:
    """Everything the persona prompt is made of, after merging request and character."""

    name: str | None = None
    persona: str | None = None
    scenario: Scenario = field(default_factory=Scenario)
    sample_dialogue: str | None = None
    user_name: str | None = None
    """Who `{{user}}` is: the user persona's name, else the scenario's opponent."""
    user_description: str | None = None
    system_prompt: str | None = None
    post_history_instructions: str | None = None

    @classmethod
    def merge(
        cls, character: Character | None, persona: str | None, scenario: Scenario | None,
        *, user_name: str | None = None, user_description: str | None = None,
    ) -> RoleplaySetup:
        base = character.scenario if character else Scenario()
        given = scenario or Scenario()
        opponent = given.opponent or user_name or base.opponent
        return cls(
            name=character.display_name if character else None,
            persona=persona if persona else (character.persona if character else None),
            scenario=Scenario(
                opponent=opponent,
                situation=given.situation or base.situation,
                background=given.background or base.background,
            ),
            sample_dialogue=character.sample_dialogue if character else None,
            user_name=user_name or opponent,
            user_description=user_description,
            system_prompt=character.system_prompt if character else None,
            post_history_instructions=character.post_history_instructions if character else None,
        )

    def macro_names(self, language: PersonaLanguage = "ko") -> MacroNames:
        return MacroNames(char=self.name or ("캐릭터" if language == "ko" else "Character"),
                          user=self.user_name or _LABELS[language]["user"])


def format_persona_for_roleplay(
    setup: RoleplaySetup, language: PersonaLanguage = "ko", *,
    lore_before: Sequence[str] = (), lore_after: Sequence[str] = (),
) -> str:
    labels = _LABELS[language]
    names = setup.macro_names(language)

    def text(value: str | None) -> str:
        return replace_macros(value.strip(), names) if value and value.strip() else ""

    parts: list[str] = []
    if setup.name:
        parts.append(labels["intro"].format(name=setup.name))
    parts += [entry for entry in lore_before if entry]
    if text(setup.persona):
        parts.append(text(setup.persona))
    parts += [entry for entry in lore_after if entry]
    scene = [
        f"{labels[field]}: {text(value)}"
        for field, value in (("situation", setup.scenario.situation),
                             ("background", setup.scenario.background),
                             ("opponent", setup.scenario.opponent),
                             ("opponent_about", setup.user_description))
        if text(value)
    ]
    if scene:
        parts.append("\n".join(scene))
    if text(setup.sample_dialogue):
        parts.append(f"{labels['sample']}:\n{text(setup.sample_dialogue)}")
    own = text(setup.system_prompt)
    parts.append(with_original(own, labels["rules"]) if own else labels["rules"])
    closing = text(setup.post_history_instructions)
    if closing:
        parts.append(with_original(closing, ""))
    return "\n\n".join(part for part in parts if part.strip())


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


def memory_block(scenes: list[str], language: PersonaLanguage = "ko") -> str:
    """Recalled episodes as they follow the summary, oldest first, one scene a paragraph."""
    return _LABELS[language]["memory"] + "\n" + "\n\n".join(scene.strip() for scene in scenes)

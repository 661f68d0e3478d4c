"""What is sent upstream is always valid for Gemma 3's chat template."""

import orjson

from roleplay.characters.model import Scenario
from roleplay.characters.persona import RoleplaySetup, format_persona_for_roleplay
from roleplay.chat.prompt import build_prompt, is_gemma_valid
from roleplay.core.http_pool import json_body
from roleplay.llm.client import ChatMessage as M


def test_leading_assistant_greeting_moves_into_the_system_prompt() -> None:
    prompt = build_prompt("persona", [M("assistant", "안녕! 나는 민지야."), M("user", "안녕")],
                          character_name="민지")
    assert is_gemma_valid(prompt)
    assert [m.role for m in prompt] == ["system", "user"]
    assert "안녕! 나는 민지야." in prompt[0].content


def test_two_user_messages_in_a_row_are_merged() -> None:
    prompt = build_prompt("p", [M("user", "hi"), M("user", "are you there?")])
    assert is_gemma_valid(prompt)
    assert prompt[1] == M("user", "hi\n\nare you there?")


def test_system_message_in_the_middle_joins_the_single_system_message() -> None:
    prompt = build_prompt("p", [M("user", "a"), M("assistant", "b"), M("system", "be brief"),
                                M("user", "c")])
    assert is_gemma_valid(prompt)
    assert sum(m.role == "system" for m in prompt) == 1
    assert prompt[0].content.endswith("be brief")
    assert [m.role for m in prompt[1:]] == ["user", "assistant", "user"]


def test_empty_conversation_gets_a_user_turn_to_answer() -> None:
    prompt = build_prompt("p", [])
    assert is_gemma_valid(prompt)
    assert [m.role for m in prompt] == ["system", "user"]


def test_no_persona_and_only_assistant_messages_is_still_valid() -> None:
    prompt = build_prompt(None, [M("assistant", "x"), M("assistant", "y"), M("user", " ")])
    assert is_gemma_valid(prompt)


def test_conversation_ending_on_assistant_ends_on_user_for_generation() -> None:
    prompt = build_prompt("p", [M("user", "a"), M("assistant", "b")])
    assert is_gemma_valid(prompt) and prompt[-1].role == "user"


def test_prompt_messages_are_chat_messages_as_the_request_encodes_them() -> None:
    prompt = build_prompt("p", [M("user", " a "), M("user", "b"), M("assistant", "c"), M("user", "d")])
    assert all(type(m) is M for m in prompt)
    assert prompt == [{"role": "system", "content": "p"}, {"role": "user", "content": "a\n\nb"},
                      {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    assert orjson.loads(json_body(prompt)) == prompt


def test_persona_format_follows_the_design_document() -> None:
    text = format_persona_for_roleplay(RoleplaySetup(
        name="민지", persona="밝고 명랑한 10대 소녀",
        scenario=Scenario(situation="방과 후 교실", background="고등학교", opponent="철수")))
    assert text.startswith("당신은 민지입니다.\n\n밝고 명랑한 10대 소녀")
    assert "현재 상황: 방과 후 교실\n배경: 고등학교\n상대방: 철수" in text
    assert "중요 지침:\n- 캐릭터의 성격과 말투를 일관되게 유지하세요." in text


def test_persona_in_english_when_asked() -> None:
    text = format_persona_for_roleplay(RoleplaySetup(name="Mia"), language="en")
    assert text.startswith("You are Mia.") and "Important rules:" in text

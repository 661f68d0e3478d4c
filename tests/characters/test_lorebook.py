"""Which lorebook entries fire, as the V2 spec says frontends should by default."""

from __future__ import annotations

from typing import Any

from roleplay.characters.lorebook.activation import select_entries
from roleplay.characters.lorebook.model import CharacterBook
from roleplay.characters.macros import MacroNames, replace_macros, with_original

NAMES = MacroNames(char="민지", user="철수")


def _book(*entries: dict[str, Any], **fields: Any) -> CharacterBook:
    return CharacterBook.model_validate({"entries": [
        {"content": f"entry {n}", "insertion_order": n, "id": n, **entry}
        for n, entry in enumerate(entries)], **fields})


def _fired(book: CharacterBook, *messages: str, budget: int = 10_000) -> list[Any]:
    return [e.id for e in select_entries(book, list(messages), NAMES, budget).fired]


def test_a_key_fires_its_entry_as_a_substring_so_korean_particles_match() -> None:
    book = _book({"keys": ["사과"]})
    assert _fired(book, "나 사과를 좋아해") == [0]
    assert _fired(book, "바나나를 좋아해") == []


def test_keys_ignore_case_unless_the_entry_is_case_sensitive() -> None:
    assert _fired(_book({"keys": ["Apple"]}), "an APPLE pie") == [0]
    assert _fired(_book({"keys": ["Apple"], "case_sensitive": True}), "an APPLE pie") == []
    assert _fired(_book({"keys": ["Apple"], "case_sensitive": True}), "an Apple pie") == [0]


def test_only_the_last_scan_depth_messages_are_scanned() -> None:
    book = _book({"keys": ["dragon"]}, scan_depth=1)
    assert _fired(book, "a dragon!", "what now?") == []
    assert _fired(_book({"keys": ["dragon"]}, scan_depth=2), "a dragon!", "what now?") == [0]


def test_selective_entries_need_a_secondary_key_too() -> None:
    book = _book({"keys": ["sword"], "selective": True, "secondary_keys": ["fire", "ice"]})
    assert _fired(book, "a sword") == []
    assert _fired(book, "a sword of ICE") == [0]


def test_constant_entries_always_fire_and_disabled_ones_never() -> None:
    book = _book({"keys": [], "constant": True}, {"keys": ["x"], "constant": True, "enabled": False},
                 {"keys": ["hello"], "enabled": False})
    assert _fired(book, "hello") == [0]


def test_insertion_order_and_position_place_the_entries() -> None:
    book = _book({"keys": ["a"], "insertion_order": 30, "position": "after_char"},
                 {"keys": ["a"], "insertion_order": 10},
                 {"keys": ["a"], "insertion_order": 20, "position": "before_char"})
    selection = select_entries(book, ["a"], NAMES, 10_000)
    assert [e.id for e in selection.fired] == [1, 2, 0]
    assert selection.texts("before_char") == ["entry 1", "entry 2"]
    assert selection.texts("after_char") == ["entry 0"]


def test_the_budget_cuts_the_lowest_priority_entries_first() -> None:
    book = _book({"keys": ["a"], "content": "low " * 20, "priority": 1},
                 {"keys": ["a"], "content": "high " * 20, "priority": 9},
                 {"keys": ["a"], "content": "mid " * 20, "priority": 5})
    selection = select_entries(book, ["a"], NAMES, 45)
    assert [e.id for e in selection.fired] == [1, 2]
    assert [e.id for e in selection.over_budget] == [0]
    assert [e.id for e in select_entries(book, ["a"], NAMES, 25).fired] == [1]


def test_without_priority_insertion_order_ranks_the_entries() -> None:
    book = _book({"keys": ["a"], "content": "x " * 20, "insertion_order": 1},
                 {"keys": ["a"], "content": "y " * 20, "insertion_order": 2})
    assert _fired(book, "a", budget=25) == [1]


def test_regex_keys_match_with_flags_and_a_bad_pattern_never_fires() -> None:
    book = _book({"keys": [r"/dra(g|k)on/i"], "use_regex": True},
                 {"keys": [r"\bcat\b"], "use_regex": True},
                 {"keys": ["(unclosed"], "use_regex": True})
    assert _fired(book, "DRAKON and a cat") == [0, 1]
    assert _fired(book, "concatenate") == []


def test_a_catastrophic_regex_is_stopped_by_its_time_limit() -> None:
    """`(x+x+)+y` backtracks exponentially on x's without a y; it gives up, the turn goes on,
    and once the turn's regex budget is spent the other regex keys do not run at all."""
    book = _book(*[{"keys": [r"(x+x+)+y"], "use_regex": True}] * 10, {"keys": ["b"]})
    assert _fired(book, "x" * 5000 + " b") == [10]


def test_entry_content_has_its_macros_replaced_and_decorators_removed() -> None:
    book = _book({"keys": ["a"], "content": "@@depth 4\n{{char}} knows <USER> and {{User}}."})
    assert select_entries(book, ["a"], NAMES, 1000).fired[0].content == "민지 knows 철수 and 철수."


def test_macros_are_case_insensitive_and_original_stands_for_our_text() -> None:
    assert replace_macros("{{CHAR}}/<bot>/{{ user }}/<User>{{// a note}}", NAMES) == "민지/민지/철수/철수"
    assert with_original("before {{original}} after", "ours") == "before ours after"



def test_recursive_scanning_lets_fired_entries_fire_others() -> None:
    entries = ({"keys": ["용"], "content": "용은 보물을 지킨다."},
               {"keys": ["보물"], "content": "보물은 산속 동굴에 있다."})
    assert _fired(_book(*entries), "용이다!") == [0]
    assert _fired(_book(*entries, recursive_scanning=True), "용이다!") == [0, 1]


def test_lore_never_takes_the_conversations_room() -> None:
    from roleplay.chat.lore_prompt import lore_budget
    from roleplay.core.settings import Settings

    settings = Settings(max_context_tokens=4096)
    book = _book(token_budget=100_000)
    assert lore_budget(book, 500, settings=settings, max_tokens=512, ratio=1.0) == 896, \
        "a quarter of what the reply leaves"
    assert lore_budget(_book(token_budget=100), 500, settings=settings, max_tokens=512,
                       ratio=1.0) == 100
    assert lore_budget(book, 3500, settings=settings, max_tokens=512, ratio=1.0) == 20, \
        "what the persona and summary leave above the minimum history"
    assert lore_budget(book, 500, settings=settings, max_tokens=512, ratio=2.0) == 448

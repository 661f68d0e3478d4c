"""How messages become episodes, and the words the lexical ranker matches on."""

from __future__ import annotations

from roleplay.core.settings import Settings
from roleplay.core.token_counter import count_tokens
from roleplay.memory.episode_maker import episode_tokens, make_episodes
from roleplay.memory.lexical_terms import strip_particle, terms
from roleplay.sessions.store import StoredMessage


def _message(role: str, content: str) -> StoredMessage:
    return StoredMessage(role=role, content=content, at=0)  # type: ignore[arg-type]


def _settings(**values: object) -> Settings:
    return Settings.model_validate({"memory_tokens": 300, "episode_messages": 4, **values})


def test_a_korean_word_matches_across_particles() -> None:
    assert strip_particle("사과를") == strip_particle("사과는") == "사과"
    assert strip_particle("카페에서") == "카페"
    assert set(terms("사과를 먹었어")) & set(terms("사과는 어디 있어?"))


def test_a_lone_syllable_keeps_itself_rather_than_losing_it_to_a_particle() -> None:
    assert strip_particle("이") == "이"


def test_english_terms_are_stemmed_and_stopwords_dropped() -> None:
    assert terms("promised the trip") == terms("promise trips")
    assert "the" not in terms("the cat")


def test_episodes_hold_up_to_the_message_count_with_their_spans() -> None:
    messages = [_message("user" if n % 2 == 0 else "assistant", f"짧은 말 {n}") for n in range(10)]
    episodes = make_episodes(messages, 40, settings=_settings(), character_name="민지", language="ko")
    assert [(e.first, e.last) for e in episodes] == [(40, 43), (44, 47), (48, 49)]
    assert episodes[0].text.splitlines()[:2] == ["사용자: 짧은 말 0", "민지: 짧은 말 1"]
    assert episodes[0].id == "e40-43"
    assert all(e.terms and e.tokens == count_tokens(e.text) for e in episodes)


def test_no_episode_is_bigger_than_half_the_memory_budget() -> None:
    settings = _settings(memory_tokens=200)
    messages = [_message("user", "오늘 카페에서 라떼를 마셨어. " * 3) for _ in range(12)]
    episodes = make_episodes(messages, 0, settings=settings, character_name=None, language="ko")
    assert all(e.tokens <= episode_tokens(settings) + 2 for e in episodes)


def test_a_long_reply_is_split_at_sentences_and_keeps_its_last_detail() -> None:
    settings = _settings(memory_tokens=120)
    long = " ".join(f"This is sentence number {n} of a long reply." for n in range(40))
    long += " The key is under the blue flowerpot."
    episodes = make_episodes([_message("assistant", long)], 7, settings=settings,
                             character_name="Mina", language="en")
    assert len(episodes) > 1
    assert len({e.id for e in episodes}) == len(episodes), "pieces of one message get their own ids"
    assert all((e.first, e.last) == (7, 7) for e in episodes)
    assert "blue flowerpot" in episodes[-1].text
    assert all(e.text.startswith("Mina: ") for e in episodes)


def test_empty_messages_make_no_episode() -> None:
    assert make_episodes([_message("user", "   ")], 0, settings=_settings(), character_name=None,
                         language="en") == []

"""What keeps a turn's recall flat in the session's episodes: the block counted from the
episodes' stored counts (no encoding on the turn), the rankers sorting in numpy over the
folded episodes only, and the budget's walk ending once nothing more can fit."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from roleplay.characters.persona import PersonaLanguage
from roleplay.chat.context_manager import ContextManager
from roleplay.core.settings import Settings
from roleplay.core.token_counter import count_tokens, message_tokens
from roleplay.memory.block import block_of
from roleplay.memory.episode_maker import make_episodes
from roleplay.memory.lexical_terms import terms
from roleplay.memory.rankers import LexicalRanker, SemanticRanker
from roleplay.memory.recall import _within
from roleplay.sessions.episode_store import Episode
from roleplay.sessions.store import StoredMessage, Window

LINES = {
    "ko": ["참, 우리 집 고양이는 이름이 나비야. 하얀 털에 꼬리만 까매.", "와, 그렇구나. 꼭 기억할게!",
           "오늘 회사에서 일이 많아서 정신없었어", "그럴 땐 푹 쉬는 게 최고야~", "내 생일은 3월 14일이야…",
           "정말? 그래서 어떻게 됐어?", "\"나비\"라고 불러 줘 😊", "응응, 듣고 있어 (웃음)"],
    "en": ["Oh, by the way, our cat is named Navi. White fur, only the tail is black.",
           "Mm-hm, I'm listening", "My birthday is March 14th, same day as White Day!",
           "Really? What happened next?", "I took cello lessons for seven years as a kid...",
           "Rest up when you can 🙂", "Choco barks: \"woof\"", "Time flies; 2024"],
}


def _episodes(language: PersonaLanguage) -> list[Episode]:
    lines = LINES[language] * 3
    messages = [StoredMessage(role="user" if n % 2 == 0 else "assistant", content=text, at=0)
                for n, text in enumerate(lines)]
    settings = Settings.model_validate({"memory_tokens": 120, "episode_messages": 2})
    return make_episodes(messages, 0, settings=settings, character_name=None, language=language)


def test_the_blocks_count_is_never_below_the_encoded_one_nor_over_by_more_than_a_token_a_scene() -> None:
    for language in ("ko", "en"):
        episodes = _episodes(language)
        for size in (1, 2, 3):
            for chosen in itertools.combinations(episodes, size):
                block = block_of(list(chosen), language)
                for before in ("요약은 여기까지.", "the summary ends here", "끝!"):
                    encoded = count_tokens(f"{before}\n\n{block.text}") - count_tokens(before)
                    assert 0 <= block.tokens - encoded <= size, (language, before, block.text)


def test_a_plan_counts_the_memory_block_by_its_stored_count_and_encodes_nothing_new() -> None:
    settings = Settings.model_validate({"max_context_tokens": 4096})
    context = ContextManager(settings)
    messages = [StoredMessage(role="user", content="고양이 이름 기억나?", at=0, tokens=12)]
    window = Window(length=41, watermark=39, first_index=40, summary="지난 이야기.", summarizing=False,
                    messages=messages)
    block = block_of(_episodes("ko")[:2], "ko")
    base = message_tokens(context.system_prompt("민지는 바리스타.", "지난 이야기.", "ko"))
    misses = count_tokens.cache_info().misses
    plan = context.plan(window, persona="민지는 바리스타.", summary="지난 이야기.", max_tokens=256, ratio=1.0,
                        character_name=None, language="ko", memory=block)
    assert count_tokens.cache_info().misses == misses, "the block and the prompt holding it are not encoded"
    assert plan.local_tokens == base + block.tokens + 12
    assert plan.prompt[0].content.endswith(block.text)
    assert plan.local_tokens >= message_tokens(plan.prompt[0].content) + 12


def test_taking_stops_as_soon_as_not_even_the_smallest_episode_would_fit() -> None:
    costs = [50, 40, 30, 60, 35]
    walked: list[int] = []

    def ranked() -> Iterator[int]:
        for i in (3, 0, 4, 1, 2):
            walked.append(i)
            yield i

    assert _within(ranked(), costs, 120, min(costs)) == [3, 0]
    assert walked == [3, 0, 4], "after 3 and 0 only 10 is left, less than the smallest (30)"
    assert _within(iter([3, 2, 0]), costs, 100, min(costs)) == [3, 2], "one too big is passed over"
    assert _within(iter([1, 2, 0]), costs, 100, min(costs)) == [1, 2]


def test_the_lexical_order_is_the_folded_episodes_sharing_a_term_best_first_older_first_on_ties() -> None:
    ranker = LexicalRanker([["cat", "moon"], ["rain", "sun"], ["cat", "moon"], ["cat", "dog"],
                            ["moon", "cat"]])
    assert ranker.order("the moon and the cat", 5) == [0, 2, 4, 3]
    assert ranker.order("the moon and the cat", 3) == [0, 2], "only the first `within`"
    assert ranker.order("nothing shared", 5) == []
    assert ranker.order("moon", 0) == []


def test_the_lexical_scores_are_exactly_bm25s_own() -> None:
    """The ranker adds up the index's columns itself, in one step: what `BM25.get_scores` gives."""
    import bm25s

    documents = [terms(text) for text in LINES["ko"] + LINES["en"]]
    index = bm25s.BM25()
    index.index(documents, show_progress=False)
    ranker = LexicalRanker(documents)
    for query in [*LINES["ko"], *LINES["en"], "고양이 이름이 뭐였지, 고양이?"]:
        scores = ranker.scores(query)
        known = [t for t in terms(query) if t in index.vocab_dict]
        assert scores is not None and scores.tolist() == index.get_scores(known).tolist()
    assert ranker.scores("nothing shared") is None


def test_the_semantic_order_takes_the_folded_episodes_with_vectors_most_similar_first() -> None:
    ranker = SemanticRanker([[1.0, 0.0], None, [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    assert ranker.order([1.0, 0.0], 5) == [0, 3, 2, 4]
    assert ranker.order([1.0, 0.0], 3) == [0, 2]
    assert ranker.covers_first(1) and not ranker.covers_first(2) and not ranker.covers_first(9)
    assert SemanticRanker([[1.0], [0.5]]).covers_first(2)

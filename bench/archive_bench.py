"""Issue 31 (conversations kept: an idle conversation moves out of Redis to the cold store
and comes back whole on its next use), measured through the real layer:
`make bench BENCH=archive`.

**Restore.** One Korean role-play of 500 turns (1,000 messages of role-play length: the
user's 1-3 sentences, the character's a stage direction and 3-7 sentences; the result
gives their median characters and tokens) is played
through Server B (the local runner in its own process, signed in, on a private Redis,
cold store = files under a temporary `DATA_DIR`) against a stand-in upstream
(`bench/memory_standin.py`: each turn answered with the conversation's scripted reply,
each summary request with a canned Korean summary), so its summary, watermark, memory
episodes and ids are the layer's own. `MAX_CONTEXT_TOKENS` is 8192 (with 4096, the
production default, 18 recent messages of this length alone nearly fill the prompt and
the layer summarizes on every turn). Then, `REPS` times: the bench moves it cold
(`conversation_archive.archive`, the sweep's own step), one turn (the server brings it
back first: `scope.owned_session_and`), then one more turn on it hot. The added latency
is the first turn after the move minus the hot turn, client-side wall time. Apart, in
the bench's process: `bring_back` alone after a move, and its parts (reading the copy;
digest, gunzip and JSON; the rest is Redis: the marker, the restore script, the index).

**Redis memory.** On a second private Redis (nothing else's keys in its `used_memory`),
with a key prefix of its own: 1,000 conversations of 100 turns (200 messages), all hot,
for 200 users (5 each). Four 100-turn conversations are played through Server B as
above; the 1,000 are their keys copied byte for byte (DUMP/RESTORE, the owner set per
copy) and listed through `conversation_index.touch`, as a turn lists them. `INFO memory`
`used_memory` over the empty server's; then 50 of them touched "now" and `sweep_idle`
run with a clock a hot window plus a minute ahead (its own batches, until nothing moves):
`used_memory` again, and the sweep's rate. The cold copies' sizes are the files the sweep
wrote.

**S3.** Deployed, the copy comes from S3, not a local file: the bench gives an estimate,
the measured part of a restore that is not the read plus S3's documented latency for a
small object (AWS, "Best practices design patterns: optimizing Amazon S3 performance":
"consistent small object latencies (and first-byte-out latencies for larger objects) of
roughly 100-200 milliseconds"), and measures what the first S3 use costs a process
(importing boto3 and making its client: `S3ColdStore` does both on first use).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness import cpu_ms, private_redis, save, summary_ms
from bench.memory_standin import MemoryStandin
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import count_tokens
from roleplay.sessions import conversation_archive, conversation_index
from roleplay.sessions.cold_store import cold_store
from roleplay.sessions.scope import storage_id
from tests.support.real_redis import delete_keys
from tests.support.server_process import ServedApp, server_b_process
from tests.support.sign_in import SECRET, mint
from tests.support.upstream_server import serve

SEED = 31
RESTORE_TURNS = 500
REPS = 30
CONVERSATIONS = 1000
CONVERSATION_TURNS = 100
USERS = 200
KEEP_HOT = 50
TEMPLATES = 4
CONTEXT_TOKENS = 8192
MODEL = "roleplay-model"
PREFIX = "bench-archive:"
MEMORY_PREFIX = "bench-archive-memory:"
S3_FIRST_BYTE_MS = (100, 200)
S3_SOURCE = ("AWS, Best practices design patterns: optimizing Amazon S3 performance "
             "(https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html): "
             "\"consistent small object latencies (and first-byte-out latencies for larger objects) "
             "of roughly 100-200 milliseconds\"")
GOAL_RESTORE_MS = 50
GOAL_MEMORY_FRACTION = 0.10
SETTLE_S = 0.15
"""After a turn, before the next step: the turn's background summary job (if it has one)
starts right after the response; a move meanwhile would find it holding the conversation."""
PERSONA = ("밝고 다정한 바리스타 민지. 비 오는 날을 좋아하고, 단골손님의 이야기를 누구보다 잘 들어 준다. "
           "작은 골목 카페 '달빛다방'을 혼자 꾸려 가며, 장난기가 많지만 속이 깊다.")
CANNED_SUMMARY = (
    "민지는 골목 카페 달빛다방을 꾸려 가는 바리스타이고, 사용자는 퇴근길마다 들르는 단골이다. "
    "두 사람은 비 오는 날의 카페에서 일상과 고민을 나누며 가까워졌다. 사용자는 회사 일로 지쳐 있고, "
    "주말에는 바다를 보러 가고 싶어 한다. 민지는 사용자에게 유자차를 자주 만들어 주며, 겨울에 함께 "
    "제주도로 여행을 가자고 약속했다. 사용자의 고양이 나비가 요즘 밥을 남겨 걱정하고 있다. 지금은 "
    "늦은 저녁, 손님이 모두 돌아간 카페에서 두 사람이 창가 자리에 마주 앉아 있고, 분위기는 편안하고 "
    "다정하다. " * 2)

_ACTIONS = (
    "*찻잔을 조심스럽게 내려놓으며 창밖을 바라본다*",
    "*앞치마에 손을 닦고 카운터 너머로 몸을 살짝 기울인다*",
    "*작게 웃으며 흘러내린 머리카락을 귀 뒤로 넘긴다*",
    "*에스프레소 머신의 스팀 소리가 잦아들자 고개를 든다*",
    "*빗방울이 맺힌 유리창에 손가락으로 작은 하트를 그린다*",
    "*따뜻한 머그잔 두 개를 테이블에 올려놓고 맞은편에 앉는다*",
    "*눈을 동그랗게 뜨고 잠시 말을 잃는다*",
    "*메모지에 무언가를 적다가 슬쩍 뒤로 숨긴다*",
    "*가게 문에 걸린 종이 딸랑 울리자 잠깐 돌아본다*",
    "*장난스럽게 눈을 찡긋한다*",
    "*조용히 고개를 끄덕이며 네 얘기에 귀를 기울인다*",
    "*갓 구운 쿠키 한 조각을 접시에 담아 네 앞으로 밀어 준다*",
    "*창가의 화분에 물을 주다 말고 뒤를 돌아본다*",
    "*턱을 괴고 너를 빤히 바라보다가 피식 웃는다*",
)
_SAYS = (
    "정말? 그런 일이 있었구나. 얘기해 줘서 고마워.",
    "오늘은 비가 와서 그런지 손님이 별로 없었어. 덕분에 너랑 천천히 얘기할 수 있네.",
    "그럴 때는 따뜻한 유자차 한 잔이 최고야. 내가 금방 만들어 줄게.",
    "너무 무리하지는 마. 네가 지쳐 보이면 나도 괜히 마음이 쓰이거든.",
    "그 사람도 나름 사정이 있었겠지만, 그래도 네가 속상했던 건 당연해.",
    "헤헤, 사실 나도 어제 비슷한 생각을 했었어. 우리 통하는 데가 있나 봐.",
    "다음 주말에 시간 되면 같이 바다 보러 갈래? 가게는 하루쯤 쉬어도 괜찮아.",
    "나비는 요즘 어때? 밥은 잘 먹고 있어? 지난번에 남긴다고 걱정했잖아.",
    "음, 그건 조금 더 생각해 보는 게 좋을 것 같아. 급하게 정할 일은 아니니까.",
    "그래서 결국 어떻게 됐어? 궁금해서 못 참겠어, 빨리 말해 줘.",
    "네가 웃으니까 나도 기분이 좋아진다. 오늘 하루도 정말 수고 많았어.",
    "혹시 배고프면 말해. 마감하고 남은 샌드위치가 하나 있거든.",
    "창밖 좀 봐, 빗소리가 꼭 음악 같지 않아? 이런 날은 시간이 천천히 가는 것 같아.",
    "그 말 들으니까 예전에 우리 처음 만났던 날이 생각나네. 그날도 비가 왔었지.",
    "괜찮아, 천천히 해도 돼. 나는 어디 안 가고 여기 있을게.",
    "내일도 올 거지? 새로 들어온 원두가 있는데 네가 제일 먼저 맛봐 줬으면 좋겠어.",
    "그런 상사는 정말 힘들겠다. 오늘은 일 얘기 그만하고 맛있는 거 먹자.",
    "우와, 대단하다! 역시 너는 마음먹으면 해내는 사람이야.",
)
_USER = (
    "오늘 회사에서 또 야근할 뻔했어.",
    "퇴근길에 비가 갑자기 쏟아져서 우산도 없이 뛰어왔어.",
    "민지야, 오늘은 뭐가 제일 맛있어?",
    "요즘 잠을 잘 못 자서 그런지 머리가 좀 무거워.",
    "주말에 뭐 할지 아직 못 정했어. 너는 계획 있어?",
    "*젖은 머리를 털며 창가 자리에 앉는다*",
    "나비가 오늘 아침에 내 신발 위에서 자고 있더라.",
    "팀장님이 회의 시간에 내 아이디어를 자기 것처럼 말했어. 진짜 어이없었어.",
    "오랜만에 친구한테 연락이 왔는데 괜히 반가우면서도 어색했어.",
    "너랑 얘기하면 이상하게 마음이 편해져.",
    "*카운터에 기대어 메뉴판을 한참 들여다본다*",
    "겨울에 제주도 가기로 한 거 아직 유효하지?",
    "오늘은 그냥 아무 말 없이 여기 앉아 있고 싶어.",
    "새로 나온 케이크 먹어 봐도 돼? 딸기 들어간 거 말이야.",
    "어제 본 드라마 결말이 너무 허무해서 잠이 안 왔어.",
    "나 다음 달에 이사 갈지도 몰라. 아직 확실하진 않지만.",
    "*작게 한숨을 쉬며 머그잔을 두 손으로 감싼다*",
    "혹시 내일 가게 일찍 열어? 출근 전에 들르고 싶어서.",
    "엄마가 반찬을 잔뜩 보내 주셨는데 혼자 다 못 먹을 것 같아.",
    "오늘 지하철에서 우리 카페 얘기하는 사람들을 봤어. 괜히 뿌듯하더라.",
)


@dataclass
class Script:
    """One conversation's turns: the user's messages and the character's replies."""

    users: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)


def script(turns: int, seed: int) -> Script:
    """Deterministic role-play text; no user message repeats (a repeat of the last one is
    answered as a retry)."""
    rng = random.Random(seed)
    made = Script()
    seen: set[str] = set()
    while len(made.users) < turns:
        text = " ".join(rng.sample(_USER, rng.randint(1, 3)))
        if text in seen and len(seen) < 5000:
            continue
        seen.add(text)
        parts = [rng.choice(_ACTIONS), *rng.sample(_SAYS, rng.randint(3, 5))]
        if rng.random() < 0.5:
            parts += [rng.choice(_ACTIONS), rng.choice(_SAYS)]
        made.users.append(text)
        made.replies.append(" ".join(parts))
    return made


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


def layer_env(redis_url: str, prefix: str, data_dir: str, upstream: str) -> dict[str, str | None]:
    """What Server B and the bench's own calls into the layer share."""
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "DATA_DIR": data_dir,
            "CONVERSATION_BUCKET": None, "LLM_BASE_URL": upstream, "LLM_SERVICE": "vllm",
            "DEFAULT_MODEL": MODEL, "JWT_SECRET": SECRET, "LOG_REQUESTS": "0",
            "MAX_CONCURRENT_USERS": "1000", "MAX_CONTEXT_TOKENS": str(CONTEXT_TOKENS),
            # the runner's own sweep never runs during the bench (it moves what the bench says)
            "ARCHIVE_EVERY_S": "86400", "SESSION_HOT_TTL_S": None,
            "CONVERSATION_RETENTION_DAYS": None, "SUMMARY_MODEL": None, "LLM_CONTEXT_LENGTH": None,
            "RECENT_TURNS_TO_KEEP": None, "SUMMARY_THRESHOLD": None, "MEMORY_TOKENS": None,
            "MAX_EPISODES": None, "EMBEDDING_MODEL": None, "SUMMARIZER_FUNCTION": None}


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint({'sub': user, 'exp': int(time.time()) + 7200})}"}


@dataclass
class Player:
    """Turns through Server B, as one signed-in user."""
    http: httpx.AsyncClient
    served: ServedApp
    standin: MemoryStandin
    user: str

    async def turn(self, session_id: str, text: str, reply: str) -> float:
        """One text turn; its wall time in seconds."""
        self.standin.reply = reply
        started = time.perf_counter()
        response = await self.http.post(
            f"{self.served.base_url}/api/chat", headers=_auth(self.user),
            json={"session_id": session_id, "persona": PERSONA, "max_tokens": 512, "tts_enabled": False,
                  "messages": [{"role": "user", "content": text}]})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"turn failed: {response.status_code} {response.text[:300]}")
        return elapsed

    async def play(self, session_id: str, played: Script, start: int = 0) -> None:
        for n in range(start, len(played.users)):
            await self.turn(session_id, played.users[n], played.replies[n])


# -- the layer, as the sweep and a request use it --------------------------------------------

async def settle(storage_id: str) -> None:
    """Waits until no turn and no summary holds the conversation."""
    keys = redis_keys()
    client = await get_redis()
    await asyncio.sleep(SETTLE_S)
    deadline = time.monotonic() + 60
    while await client.exists(keys.summary_lock(storage_id), keys.turn_lease(storage_id)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{storage_id} stayed held for a minute")
        await asyncio.sleep(0.02)


async def move_cold(storage_id: str, session_id: str) -> float:
    """Moves the conversation cold as the sweep does (`archive`), waiting out a summary
    that holds it; the move's time in seconds."""
    entry = conversation_index.member(storage_id, session_id)
    for _ in range(200):
        started = time.perf_counter()
        outcome, _cold_entry = await conversation_archive.archive(entry)
        elapsed = time.perf_counter() - started
        if outcome == "archived":
            return elapsed
        if outcome != "busy":
            raise RuntimeError(f"moving {storage_id} cold: {outcome}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{storage_id} stayed busy")


async def conversation_state(storage_id: str) -> dict[str, Any]:
    """What Redis holds of the conversation: its parts' sizes and Redis's own count."""
    keys = redis_keys()
    client = await get_redis()
    meta = await client.hgetall(keys.session(storage_id))
    episodes = await client.hgetall(keys.session_episodes(storage_id))
    names = [keys.session(storage_id), keys.session_messages(storage_id), keys.session_ids(storage_id),
             keys.session_episodes(storage_id), keys.session_lorebook(storage_id)]
    usage = 0
    for name in names:
        usage += int(await client.memory_usage(name, samples=0) or 0)
    return {"messages": int(await client.llen(keys.session_messages(storage_id))),
            "summary_upto": int(meta.get("summary_upto", -1)),
            "summary_tokens": int(meta.get("summary_tokens", 0)),
            "episodes": int(meta.get("episodes", 0)),
            "episode_fields": len(episodes),
            "redis_memory_usage_bytes": usage}


def _commandstats_usec(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["usec"]) for name, row in stats.items()}


async def bring_back_apart(storage_id: str, session_id: str, sync: redis.Redis) -> dict[str, Any]:
    """`bring_back` alone after a move, `REPS` times, and its parts."""
    total, read, unzip, decode, script, moves = [], [], [], [], [], []
    for _ in range(REPS):
        await settle(storage_id)
        moves.append(await move_cold(storage_id, session_id))
        before = _commandstats_usec(sync)
        started = time.perf_counter()
        if not await conversation_archive.bring_back(storage_id):
            raise RuntimeError(f"{storage_id} did not come back")
        total.append(time.perf_counter() - started)
        after = _commandstats_usec(sync)
        script.append(sum(after.get(name, 0) - before.get(name, 0) for name in ("evalsha", "eval")) / 1e6)
        # the parts, again on the same copy (it stays in the cold store)
        started = time.perf_counter()
        copy = await cold_store().get(storage_id)
        read.append(time.perf_counter() - started)
        assert copy is not None
        started = time.perf_counter()
        hashlib.sha256(copy).hexdigest()
        gzip.decompress(copy)
        unzip.append(time.perf_counter() - started)
        started = time.perf_counter()
        conversation_archive.unpack(copy)
        decode.append(time.perf_counter() - started - unzip[-1])
    rest = [t - r - u - d for t, r, u, d in zip(total, read, unzip, decode, strict=True)]
    return {"bring_back": summary_ms(total), "read_copy": summary_ms(read),
            "sha256_and_gunzip": summary_ms(unzip),
            "unpack_header_and_text": summary_ms(decode),
            "redis_and_rest": summary_ms(rest),
            "restore_script_in_redis": summary_ms(script),
            "move_cold_archive": summary_ms(moves)}


# -- part 1: the first turn after the move ---------------------------------------------------

async def restore_part(served: ServedApp, standin: MemoryStandin, redis_url: str) -> dict[str, Any]:
    user, session = "bench-archive-user", "restore-500"
    key = storage_id(user, session)
    played = script(RESTORE_TURNS + 2 * REPS, SEED)
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    async with httpx.AsyncClient(timeout=120) as http:
        player = Player(http, served, standin, user)
        started = time.monotonic()
        for n in range(RESTORE_TURNS):
            await player.turn(session, played.users[n], played.replies[n])
        await settle(key)
        build_s = time.monotonic() - started
        state = await conversation_state(key)
        if state["messages"] != 2 * RESTORE_TURNS:
            raise RuntimeError(f"the conversation holds {state['messages']} messages")
        print(f"  built {RESTORE_TURNS} turns in {build_s:.0f} s: {state}", flush=True)
        move_s = await move_cold(key, session)
        copy = await cold_store().get(key)
        assert copy is not None
        state_json = conversation_archive.unpack(copy)[1].encode()
        turn_at = RESTORE_TURNS
        redis_pid = int(sync.info("server")["process_id"])

        async def measured(n: int) -> tuple[float, float, float]:
            """A turn's wall time (s) and the CPU (ms) Server B and Redis spent meanwhile."""
            server_before, redis_before = cpu_ms(served.pid), cpu_ms(redis_pid)
            wall = await player.turn(session, played.users[n], played.replies[n])
            return wall, cpu_ms(served.pid) - server_before, cpu_ms(redis_pid) - redis_before

        cold, hot = [], []
        # the move just made is the first repetition's
        for rep in range(REPS):
            if rep:
                await settle(key)
                await move_cold(key, session)
            cold.append(await measured(turn_at))
            turn_at += 1
            await settle(key)
            if sync.exists(redis_keys().session_cold(key)):
                raise RuntimeError("the turn did not bring the conversation back")
            hot.append(await measured(turn_at))
            turn_at += 1
        apart = await bring_back_apart(key, session, sync)
        after = await conversation_state(key)
    sync.close()
    added = [c[0] - h[0] for c, h in zip(cold, hot, strict=True)]

    def cpu(part: int) -> dict[str, float]:
        pairs = [(c[part], h[part]) for c, h in zip(cold, hot, strict=True)]
        return {"hot_median": round(statistics.median(h for _, h in pairs), 2),
                "first_after_move_median": round(statistics.median(c for c, _ in pairs), 2),
                "added_paired_median": round(statistics.median(c - h for c, h in pairs), 2)}

    texts = {"user": [len(t) for t in played.users[:RESTORE_TURNS]],
             "reply": [len(t) for t in played.replies[:RESTORE_TURNS]]}
    return {
        "conversation": {
            "turns": RESTORE_TURNS, **state, "build_s": round(build_s, 1),
            "summary_requests_while_building": standin.summary_requests,
            "chars_median": {who: statistics.median(n) for who, n in texts.items()},
            "tokens_median": {"user": statistics.median(count_tokens(t) for t in played.users[:200]),
                              "reply": statistics.median(count_tokens(t) for t in played.replies[:200])},
            "dump_json_bytes": len(state_json), "cold_copy_bytes": len(copy),
            "first_move_ms": round(move_s * 1000, 2),
            "messages_after_the_reps": after["messages"]},
        "turn_cpu_ms": {"server_b": cpu(1), "redis": cpu(2)},
        "turn_ms": {"hot": summary_ms([h[0] for h in hot]),
                    "first_after_move": summary_ms([c[0] for c in cold]),
                    "added_paired": summary_ms(added),
                    "added_paired_range_ms": [round(min(added) * 1000, 2), round(max(added) * 1000, 2)],
                    "added_median_minus_median_ms": round(
                        (statistics.median(c[0] for c in cold) - statistics.median(h[0] for h in hot)) * 1000,
                        2)},
        "apart_ms": apart,
    }


# -- part 2: Redis memory, all hot and all but 50 cold ----------------------------------------

SESSION_KEY_KINDS = ("session", "session_messages", "session_ids", "session_episodes", "session_lorebook")


@dataclass
class Template:
    first_user: str
    keys: list[tuple[str, bytes, int]]
    """(key kind, DUMP payload, PTTL ms) of each session key that exists."""

async def make_templates(served: ServedApp, standin: MemoryStandin, redis_url: str) -> list[Template]:
    """`TEMPLATES` conversations of `CONVERSATION_TURNS` turns played through Server B."""
    user = "bench-archive-template"
    raw = redis.Redis.from_url(redis_url)
    templates = []
    async with httpx.AsyncClient(timeout=120) as http:
        player = Player(http, served, standin, user)
        for n in range(TEMPLATES):
            played = script(CONVERSATION_TURNS, SEED + 1 + n)
            session = f"template-{n}"
            await player.play(session, played)
            key = storage_id(user, session)
            await settle(key)
            names = redis_keys()
            kept = []
            for kind in SESSION_KEY_KINDS:
                name = getattr(names, kind)(key)
                payload = raw.dump(name)
                if payload is not None:
                    kept.append((kind, bytes(payload), int(raw.pttl(name))))
            templates.append(Template(played.users[0], kept))
    raw.close()
    return templates


def used_memory(client: redis.Redis) -> dict[str, int]:
    """`INFO memory`, after a second for the server's cron (its incremental rehashing)."""
    time.sleep(1)
    info: dict[str, Any] = client.info("memory")
    return {name: int(info[name]) for name in ("used_memory", "used_memory_dataset", "mem_clients_normal",
                                               "used_memory_scripts", "lazyfree_pending_objects")
            if name in info}


async def memory_part(templates: list[Template], redis_url: str, data_dir: Path) -> dict[str, Any]:

    raw = redis.Redis.from_url(redis_url)
    keys = redis_keys()
    empty = used_memory(raw)
    now = time.time()
    rows = []
    pipe = raw.pipeline(transaction=False)
    for k in range(CONVERSATIONS):
        user, session = f"user-{k % USERS:03d}", f"conversation-{k:04d}"
        key = storage_id(user, session)
        template = templates[k % len(templates)]
        for kind, payload, ttl in template.keys:
            pipe.restore(getattr(keys, kind)(key), max(ttl, 0), payload, replace=True)
        pipe.hset(keys.session(key), "owner", user)
        rows.append((user, session, key, template.first_user))
        if k % 50 == 49:
            pipe.execute()
    pipe.execute()
    for k, (user, session, key, first) in enumerate(rows):
        await conversation_index.touch(user, session, key, at=now - CONVERSATIONS + k, character_id=None,
                                       first_user_message=first)
    all_hot = used_memory(raw)
    one_hot = sum(int(raw.memory_usage(getattr(keys, kind)(rows[0][2]), samples=0) or 0)
                  for kind in SESSION_KEY_KINDS)
    grown = all_hot["used_memory"] - empty["used_memory"]
    print(f"  {CONVERSATIONS} hot: used_memory +{grown / 1e6:.1f} MB", flush=True)

    ahead = now + get_settings().session_hot_ttl_s + 60
    kept = rows[::CONVERSATIONS // KEEP_HOT][:KEEP_HOT]
    for user, session, key, first in kept:
        await conversation_index.touch(user, session, key, at=ahead, character_id=None,
                                       first_user_message=first)
    counts: Counter[str] = Counter()
    sweeps = 0
    started = time.perf_counter()
    while True:
        swept = await conversation_archive.sweep_idle(ahead)
        sweeps += 1
        counts.update(swept)
        if not swept["archived"] or sweeps > 4 * CONVERSATIONS // conversation_archive.SWEEP_BATCH:
            break
    sweep_s = time.perf_counter() - started
    for _ in range(100):
        if not used_memory(raw).get("lazyfree_pending_objects"):
            break
        await asyncio.sleep(0.05)
    cold = used_memory(raw)
    copies = sorted(path.stat().st_size for path in (data_dir / "conversations").rglob("s*"))
    hot_left = sum(int(raw.exists(keys.session(key))) for _, _, key, _ in rows)
    markers = sum(int(raw.exists(keys.session_cold(key))) for _, _, key, _ in rows)
    sample = raw.get(keys.session_cold(rows[1][2])) or b""
    # one of them comes back whole
    back_ok = await conversation_archive.bring_back(rows[1][2])
    back_messages = int(raw.llen(keys.session_messages(rows[1][2])))
    one_copy = (data_dir / "conversations" / rows[2][2][1:3] / rows[2][2]).read_bytes()
    raw.close()
    delta_hot = all_hot["used_memory"] - empty["used_memory"]
    delta_cold = cold["used_memory"] - empty["used_memory"]
    return {
        "setup": {"conversations": CONVERSATIONS, "turns_each": CONVERSATION_TURNS, "users": USERS,
                  "kept_hot": KEEP_HOT, "templates": TEMPLATES,
                  "how": "4 conversations played through Server B, their session keys copied "
                         "(DUMP/RESTORE, owner set per copy) to 1,000 storage ids, each listed "
                         "through conversation_index.touch; a private redis-server, key prefix "
                         f"{MEMORY_PREFIX!r}"},
        "used_memory_bytes": {"empty": empty, "all_hot": all_hot, "all_but_50_cold": cold},
        "all_hot_bytes": delta_hot, "all_but_50_cold_bytes": delta_cold,
        "cold_fraction": round(delta_cold / delta_hot, 4),
        "hot_bytes_per_conversation": round(delta_hot / CONVERSATIONS),
        "memory_usage_one_conversation_keys": one_hot,
        "left_per_cold_conversation_bytes": round(
            (delta_cold - KEEP_HOT * delta_hot / CONVERSATIONS) / (CONVERSATIONS - KEEP_HOT)),
        "marker_example": sample.decode() if isinstance(sample, bytes) else str(sample),
        "after_sweep": {"hot_conversations_in_redis": hot_left, "cold_markers": markers,
                        "one_brought_back": back_ok, "its_messages": back_messages},
        "sweep": {"counts": dict(counts), "calls": sweeps, "seconds": round(sweep_s, 2),
                  "conversations_per_s": round(counts["archived"] / sweep_s, 1),
                  "ms_per_conversation": round(sweep_s * 1000 / max(counts["archived"], 1), 2)},
        "cold_copy_bytes": {"files": len(copies), "median": statistics.median(copies) if copies else 0,
                            "min": copies[0] if copies else 0, "max": copies[-1] if copies else 0,
                            "total": sum(copies),
                            "json_bytes_uncompressed_example": len(gzip.decompress(one_copy))},
    }


# -- S3: what the first use of boto3 costs a process -----------------------------------------

def _fresh(code: str) -> float:
    """Seconds `code` takes in a fresh interpreter, timed inside it."""
    out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter()\n" + code +
                          "\nprint(time.perf_counter() - t)"], capture_output=True, text=True, check=True,
                         env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
    return float(out.stdout.strip().splitlines()[-1])


def boto3_first_use_ms(runs: int = 5) -> dict[str, float]:
    made = [_fresh("import boto3\nboto3.client('s3', region_name='us-east-1')") for _ in range(runs)]
    imported = [_fresh("import boto3") for _ in range(runs)]
    return {"import_boto3_median": round(statistics.median(imported) * 1000, 1),
            "import_and_client_median": round(statistics.median(made) * 1000, 1), "runs": runs}


# -- the run ------------------------------------------------------------------------------

def _code_version() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench", ":!docs"],
                                 cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    others = [line[3:] for line in changed if line.strip()]
    return commit + (f" with uncommitted changes to {len(others)} files ({', '.join(others[:6])}...)"
                     if others else "")


def run() -> dict[str, Any]:
    started = time.monotonic()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis())
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        standin = MemoryStandin(model=MODEL, context_length=CONTEXT_TOKENS, canned_summary=CANNED_SUMMARY)
        standin_url = stack.enter_context(serve(standin.app()))
        env = layer_env(redis_url, PREFIX, str(data_dir), standin_url)
        stack.enter_context(environment(env))
        served = stack.enter_context(server_b_process({k: v for k, v in env.items() if v is not None}))
        settings = get_settings()
        setup = {"settings": {name: getattr(settings, name) for name in (
                     "max_context_tokens", "recent_turns_to_keep", "summary_threshold", "memory_tokens",
                     "max_episodes", "episode_messages", "session_hot_ttl_s",
                     "conversation_retention_days")},
                 "cold_store": "files under a temporary DATA_DIR (FileColdStore: write, fsync, rename, "
                               "fsync the folder; read back to verify)",
                 "server": "local runner (uvicorn, own process), signed in, LOG_REQUESTS=0",
                 "upstream": "bench/memory_standin.py: scripted replies, canned Korean summary",
                 "code": _code_version()}
        restore = asyncio.run(restore_part(served, standin, redis_url))
        print(f"  restore: {restore['turn_ms']} cpu {restore['turn_cpu_ms']}", flush=True)
        templates = asyncio.run(make_templates(served, standin, redis_url))
        load["after_restore"] = [round(x, 2) for x in os.getloadavg()]
        delete_keys(redis_url, PREFIX + "*")
        memory_redis = stack.enter_context(private_redis())
        memory_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        with environment({"REDIS_URL": memory_redis, "REDIS_KEY_PREFIX": MEMORY_PREFIX,
                          "DATA_DIR": str(memory_dir)}):
            memory = asyncio.run(memory_part(templates, memory_redis, memory_dir))
            delete_keys(memory_redis, MEMORY_PREFIX + "*")
    boto3_ms = boto3_first_use_ms()
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    added = restore["turn_ms"]["added_paired"]["median_ms"]
    apart = restore["apart_ms"]
    read_ms = apart["read_copy"]["median_ms"]
    non_io = round(added - read_ms, 2)
    cpu = restore["turn_cpu_ms"]
    added_cpu = round(cpu["server_b"]["added_paired_median"] + cpu["redis"]["added_paired_median"], 2)
    result: dict[str, Any] = {
        "setup": {**setup, "load_average": load},
        "restore": restore,
        "memory": memory,
        "s3_estimate": {
            "source": S3_SOURCE,
            "first_byte_ms": list(S3_FIRST_BYTE_MS),
            "measured_added_minus_local_read_ms": non_io,
            "estimated_added_ms": [round(non_io + ms, 1) for ms in S3_FIRST_BYTE_MS],
            "added_cpu_server_b_plus_redis_ms": added_cpu,
            "estimated_added_ms_from_cpu": [round(added_cpu + ms, 1) for ms in S3_FIRST_BYTE_MS],
            "first_s3_use_in_a_process_ms": boto3_ms,
            "note": "an estimate, not measured on S3: the local added latency minus the local read of "
                    "the copy (or, less sensitive to this VM's load, the CPU Server B and Redis add), plus "
                    "S3's documented small-object latency; the copy is a small object."},
        "goals": {
            "restore_added_ms_local": {"measured": added, "goal": GOAL_RESTORE_MS,
                                       "met": added <= GOAL_RESTORE_MS},
            "cold_but_50_fraction": {"measured": memory["cold_fraction"], "goal": GOAL_MEMORY_FRACTION,
                                     "met": memory["cold_fraction"] <= GOAL_MEMORY_FRACTION}},
        "run_s": round(time.monotonic() - started, 1),
    }
    save("archive", result)
    return result


if __name__ == "__main__":
    run()

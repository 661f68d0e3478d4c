"""Rolling summaries: fold the previous summary and the next stretch of transcript into one.

One summarization per session at a time (a Redis lock with a TTL, so a crashed
holder cannot block forever). Each pass reads a bounded stretch after the watermark
(`SUMMARY_INPUT_TOKENS`), so its cost never grows with the conversation. The new
summary replaces the old one only if the watermark has not moved (compare-and-set),
and messages that arrived meanwhile lie after the new watermark, so none is lost.
A failure keeps the old summary and is noted; a later turn retries. The messages a pass
folds are kept as memory episodes in the same step (`memory.episode_maker`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from roleplay.characters import service as character_service
from roleplay.characters.persona import PersonaLanguage
from roleplay.chat.context_fit import budget_for
from roleplay.chat.context_manager import ContextManager, stored_tokens
from roleplay.chat.token_ratio import corrected, token_ratio
from roleplay.core.errors import ApiError, UpstreamError
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import count_tokens, message_tokens, truncate_to_tokens
from roleplay.llm.client import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ContextOverflow,
    llm_client,
)
from roleplay.llm.dialect import upstream_dialect
from roleplay.llm.prompt_counter import upstream_prompt_tokens
from roleplay.llm.sampling import Sampling
from roleplay.llm.upstream_limits import forget, remember
from roleplay.memory.episode_maker import make_episodes
from roleplay.sessions.store import SessionMeta, SessionStore, StoredMessage

logger = logging.getLogger("roleplay.chat.summarizer")

READ_CAP = 200
"""Messages read per pass at most; the token bound usually stops earlier."""

SUMMARY_FRAME_TOKENS = 64
"""The summary request's labels and speaker names, around the dialogue."""

MIN_SUMMARY_INPUT = 64

_RELEASE_SCRIPT = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

_INSTRUCTIONS: dict[str, str] = {
    "ko": (
        "당신은 롤플레이 대화의 기록 담당자입니다. 이전 요약과 이어진 대화를 하나의 새 요약으로 합치세요. "
        "역할극을 이어가는 데 필요한 것을 빠짐없이 남기세요:\n"
        "- 등장인물의 이름과 호칭\n"
        "- 사용자에 대해 알게 된 사실 (이름, 취향, 사정)\n"
        "- 주고받은 약속과 계획\n"
        "- 두 사람의 관계와 지금의 감정, 분위기\n"
        "- 현재 장면의 장소, 시간, 상황\n"
        "3인칭 과거형으로, 중요한 순서대로 간결하게 쓰세요. 요약만 출력하세요."
    ),
    "en": (
        "You keep the record of a role-play conversation. Merge the previous summary and the "
        "conversation that followed into one new summary. Keep everything needed to continue "
        "the role-play:\n"
        "- the characters' names and how they address each other\n"
        "- facts learned about the user (name, likes, circumstances)\n"
        "- promises and plans made\n"
        "- the relationship and the current mood\n"
        "- where and when the scene is, and what is happening\n"
        "Write in the third person, past tense, most important first, briefly. "
        "Output only the summary."
    ),
}
_LABELS: dict[str, dict[str, str]] = {
    "ko": {"previous": "[이전 요약]", "none": "(없음)", "dialogue": "[이어진 대화]",
           "user": "사용자", "character": "캐릭터", "ask": "위 내용을 하나의 요약으로 합쳐 주세요."},
    "en": {"previous": "[Previous summary]", "none": "(none)", "dialogue": "[The conversation since]",
           "user": "User", "character": "Character",
           "ask": "Merge the above into one summary."},
}

Outcome = Literal["summarized", "nothing_to_do", "busy", "failed", "gone"]


@dataclass(frozen=True)
class SummaryResult:
    outcome: Outcome
    passes: int = 0
    watermark: int = -1
    error: str | None = None


def summary_prompt(
    previous: str | None, messages: Sequence[StoredMessage], *, character_name: str | None,
    language: PersonaLanguage,
) -> list[ChatMessage]:
    """One system message and one user message: valid for Gemma 3's template."""
    labels = _LABELS[language]
    speaker = {"user": labels["user"], "assistant": character_name or labels["character"]}
    lines = [f"{speaker.get(m.role, m.role)}: {m.content.strip()}" for m in messages
             if m.content.strip()]
    body = (f"{labels['previous']}\n{(previous or labels['none']).strip()}\n\n"
            f"{labels['dialogue']}\n" + "\n".join(lines) + f"\n\n{labels['ask']}")
    return [ChatMessage("system", _INSTRUCTIONS[language]), ChatMessage("user", body)]


def choose_stretch(messages: Sequence[StoredMessage], limit_tokens: int) -> int:
    """How many of `messages` one pass folds.

    Stops at the token bound (but takes at least one message), then steps back so the
    first message left verbatim is the user's, when that is possible."""
    taken, total = 0, 0
    for message in messages:
        cost = stored_tokens(message)
        if taken and total + cost > limit_tokens:
            break
        taken, total = taken + 1, total + cost
    if taken < len(messages):
        for end in range(taken, 0, -1):
            if messages[end].role == "user":
                return end
    return taken


def summary_input_budget(previous: str | None, ratio: float) -> int:
    """Local tokens one pass's dialogue may take: `SUMMARY_INPUT_TOKENS`, and never more
    than the summary model's context leaves once the instructions, the previous summary
    and the answer are in."""
    settings = get_settings()
    fixed = (message_tokens(_INSTRUCTIONS[settings.summary_language])
             + message_tokens(previous or "") + SUMMARY_FRAME_TOKENS)
    room = settings.max_context_tokens - settings.summary_max_tokens - corrected(fixed, ratio)
    return max(MIN_SUMMARY_INPUT, min(settings.summary_input_tokens, int(room / ratio)))


def _cut(message: StoredMessage, limit: int) -> StoredMessage:
    """A message no longer than the whole input budget: one huge message (accepted
    when the chat's context was larger, or before this rule) can never make every
    summary request fail; its head is summarized."""
    if stored_tokens(message) <= limit:
        return message
    return message.model_copy(update={"content": truncate_to_tokens(message.content, limit) + " …"})


async def _complete_within_context(
    prompt_for: Callable[[int], list[ChatMessage]], taken: int,
) -> tuple[int, Completion]:
    """The summary request under the same rules as a chat turn: the summary model's real
    context (and Ollama's num_ctx), an exact count at the edge, and one retry with half
    the stretch if the upstream refuses the prompt as too long. Answers how many
    messages the summary folded, and the completion."""
    settings = get_settings()
    model = settings.summary_model or settings.default_model
    budget = await budget_for(model, settings)
    ratio = await token_ratio(model)
    reply = settings.summary_max_tokens
    room = budget.planning - reply
    local = sum(message_tokens(m.content) for m in prompt_for(taken))
    while taken > 1 and corrected(local, ratio) > room:
        taken -= 1
        local = sum(message_tokens(m.content) for m in prompt_for(taken))
    if (upstream_dialect(settings).counts_prompts
            and corrected(local, ratio) + reply > budget.planning * (1 - settings.exact_count_margin)):
        exact = await upstream_prompt_tokens(model, prompt_for(taken), settings)
        if exact is not None and exact > room and taken > 1:
            taken = max(1, taken * room // exact)
    client = llm_client(settings)

    def request(count: int) -> CompletionRequest:
        return CompletionRequest(model=model, messages=prompt_for(count),
                                 sampling=Sampling(temperature=0.3, max_tokens=reply),
                                 context_tokens=budget.sent)

    try:
        return taken, await client.complete(request(taken))
    except ContextOverflow as overflow:
        forget(model, settings)
        if overflow.limit:
            remember(model, overflow.limit, settings)
        if taken == 1:
            raise
        logger.warning("the summary prompt was too long for %s; folding half as much", model)
        taken //= 2
        return taken, await client.complete(request(taken))


class SummaryLock:
    """`SET NX PX` with a token, released only by its holder."""

    def __init__(self, session_id: str, ttl_s: int) -> None:
        self.key = redis_keys().summary_lock(session_id)
        self.ttl_ms = ttl_s * 1000
        self.token = uuid.uuid4().hex

    async def acquire(self) -> bool:
        return bool(await (await get_redis()).set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def release(self) -> None:
        await _RELEASE_SCRIPT([self.key], [self.token])


class Summarizer:
    def __init__(self, sessions: SessionStore | None = None) -> None:
        self.sessions = sessions or SessionStore()

    async def summarize(self, session_id: str, *, max_passes: int = 50) -> SummaryResult:
        """Folds what is older than the recent window into the summary, pass by pass."""
        settings = get_settings()
        lock = SummaryLock(session_id, settings.summary_lock_ttl_s)
        if not await lock.acquire():
            return SummaryResult("busy")
        passes, watermark = 0, -1
        try:
            while passes < max_passes:
                meta = await self.sessions.load_meta(session_id)
                if meta is None:
                    return SummaryResult("gone", passes)
                watermark = meta.summary_upto
                worth = 0 if passes == 0 else settings.summary_input_tokens // 2
                moved = await self._one_pass(meta, worth)
                if moved is None:
                    break
                passes, watermark = passes + 1, moved
        except ApiError as error:
            logger.warning("summary of session %s failed: %s", session_id, error.message)
            await self.sessions.record_summary_failure(session_id, error.message)
            return SummaryResult("failed", passes, watermark, error.message)
        finally:
            await lock.release()
        return SummaryResult("summarized" if passes else "nothing_to_do", passes, watermark)

    async def _one_pass(self, meta: SessionMeta, worth_tokens: int) -> int | None:
        """Summarizes one bounded stretch; the new watermark, or None if there is nothing
        to do. Later passes of a job run only for a backlog of `worth_tokens` or more, so
        the turns that trickle in while a summary runs do not each cost a model call."""
        settings = get_settings()
        length = await self.sessions.length(meta.session_id)
        last = ContextManager(settings).summarizable_upto(length)
        first = meta.summary_upto + 1
        if last < first:
            return None
        stretch = await self.sessions.read_range(meta.session_id, first,
                                                 min(last, first + READ_CAP - 1))
        if not stretch or sum(stored_tokens(m) for m in stretch) < worth_tokens:
            return None
        model = settings.summary_model or settings.default_model
        limit = summary_input_budget(meta.summary, await token_ratio(model))
        taken = choose_stretch(stretch, limit)
        character = None
        if meta.character_id:
            try:
                character = await character_service.get_character(meta.character_id)
            except ApiError:
                character = None
        language = settings.summary_language

        def prompt_for(count: int) -> list[ChatMessage]:
            return summary_prompt(meta.summary, [_cut(m, limit) for m in stretch[:count]],
                                  character_name=character.name if character else None,
                                  language=language)

        taken, completion = await _complete_within_context(prompt_for, taken)
        text = truncate_to_tokens(completion.content.strip(), settings.summary_max_tokens)
        if not text:
            raise UpstreamError("the model answered the summary request with nothing")
        upto = first + taken - 1
        episodes = make_episodes(
            stretch[:taken], first, settings=settings, language=settings.persona_language,
            character_name=character.name if character else None,
        ) if settings.memory_tokens else []
        saved = await self.sessions.save_summary(
            meta.session_id, expected_upto=meta.summary_upto, upto=upto, summary=text,
            tokens=count_tokens(text), epoch=meta.epoch,
            episodes=[e.model_dump_json() for e in episodes])
        return upto if saved else None

"""Preparing a turn of any kind (`/api/chat`, regenerate, continue, the OpenAI API's
session turns): one sequence, with the store step as the only part that differs.

Every check that can refuse a turn (quota, model, session owner, character, budget,
message length, the user cap) runs before anything is written. Every turn is one
request against the user's quotas, whatever its kind (a regenerate or a continue costs
the upstream what a new message does); a turn that will speak its reply is a speech
request too, refused once the day's speech is spent. The turn then begins
under its session's lease through its `TurnStart`: a chat turn appends the user's
messages (`AppendTurn`: a retry gets the reply already stored, a re-sent history is
aligned with the stored one); regenerate and continue begin on the stored transcript
and store their reply in place (`control.replace_turn.ReplaceTurn`). The prompt is
then fitted in the upstream's real context (`context_fit`). Anything that fails after
the turn began gives the lease back, and a first turn that fails is removed whole, with
the slot it took, since its client never learned the session's id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from roleplay.characters import service as character_service
from roleplay.characters.greetings import greetings_of, pick_greeting
from roleplay.characters.lorebook.fired_store import save_fired
from roleplay.characters.lorebook.model import CharacterBook
from roleplay.characters.model import Scenario
from roleplay.characters.persona import RoleplaySetup
from roleplay.characters.user_persona import persona_from, persona_keys
from roleplay.chat.context_fit import budget_for, fit_context
from roleplay.chat.context_manager import ContextManager, ContextPlan
from roleplay.chat.control.pins import with_pins
from roleplay.chat.lore_prompt import persona_with_lore
from roleplay.chat.models import ChatReply, ChatRequest, ChatUsage, ReplyAlternative
from roleplay.chat.session_characters import SessionCharacters
from roleplay.chat.session_service import ensure_session_owner
from roleplay.chat.summarizer import Summarizer
from roleplay.chat.token_ratio import token_ratio
from roleplay.core.errors import BadRequest, NotFound
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import message_tokens
from roleplay.llm.client import CompletionRequest
from roleplay.llm.served_models import checked_model
from roleplay.memory.recall import Recall, recall
from roleplay.ops import quotas
from roleplay.ops.failover import base_urls, stale_breakers
from roleplay.sessions import conversation_index
from roleplay.sessions.concurrent_user_limiter import ConcurrentUserLimiter, occupant_id
from roleplay.sessions.known_lookups import known_lookups
from roleplay.sessions.scope import ScopedSession, owned_session_and
from roleplay.sessions.store import (
    LookupGuard,
    Replay,
    SessionMeta,
    SessionStore,
    StoredMessage,
    Swipes,
    Turn,
    TurnSetup,
    Window,
    new_message_id,
    now,
)
from roleplay.sessions.turn import LeaseKeeper, StaleLookup, begin_turn

sessions = SessionStore()
limiter = ConcurrentUserLimiter()
session_characters = SessionCharacters()


@dataclass(frozen=True)
class TurnClaim:
    """What a begun turn holds: the session's lease, and whether it made the session and
    took the user's slot (both given back if the turn fails)."""

    lease: Turn
    new_session: bool
    occupant: str
    slot_taken: bool


Store = Callable[["PreparedTurn", StoredMessage], Awaitable[int]]
"""Stores a reply in place of appending it (regenerate, continue); answers the
transcript's length after it, 0 when it was not stored."""


@dataclass
class PreparedTurn:
    """A turn whose user messages are stored and whose prompt is ready to send."""

    session_id: str
    """The session store's id (`session_scope`): what every stored read and write uses."""
    client_session_id: str
    """The id the client names the session by: what answers carry."""
    model: str
    request: ChatRequest
    window: Window
    plan: ContextPlan
    ratio: float
    claim: TurnClaim
    summary_failed_at: float | None = None
    greeting: str | None = None
    voice_id: str | None = None
    user: User | None = None
    greetings: list[str] | None = None
    reply_id: str = field(default_factory=new_message_id)
    reply_stored: bool = False
    store: Store | None = None
    alternatives: list[ReplyAlternative] | None = None
    recalled: list[str] = field(default_factory=list)
    """The episodes memory brought back into the prompt (`memory.recall`)."""
    character_id: str | None = None

    @property
    def speaks(self) -> bool:
        return speaks(self.request)

    @property
    def user_message_id(self) -> str | None:
        message = self.claim.lease.user_message
        return message.id or None if message else None

    def completion_request(self) -> CompletionRequest:
        return CompletionRequest(model=self.model, messages=self.plan.prompt,
                                 sampling=self.request.sampling(),
                                 context_tokens=self.plan.context_tokens)


@dataclass(frozen=True)
class Started:
    """What a turn's store step began: its lease, the window its prompt is made of, and
    how its reply is stored (None: appended after the user's message)."""

    lease: Turn
    window: Window
    store: Store | None = None
    reply_id: str | None = None


@dataclass(frozen=True)
class TurnFacts:
    """What the checks found, for the store step."""

    session_id: str
    meta: SessionMeta | None
    setup: TurnSetup
    setup_changed: bool
    incoming: list[StoredMessage]
    guard: LookupGuard | None = None
    """The turn began on a copy of its lookup (`known_lookups`), which its begin checks."""


class TurnStart(Protocol):
    """The store step of one kind of turn."""

    @property
    def appends(self) -> bool:
        """A new message of the user's: it may open with a greeting, may summarize on the
        request path and records the lore it fired."""
        ...

    async def begin(self, facts: TurnFacts, request: ChatRequest) -> Started | Replay: ...


@dataclass(frozen=True)
class AppendTurn:
    """`/api/chat` and the OpenAI API's session turns: the user's messages are appended
    under the lease (`session_turn`), the reply after them.

    A re-sent history already answered is a retry (its stored reply comes back) or, per
    `swipes`, a swipe: then `swipe` (a regenerate, `control.replace_turn`) begins
    instead, and the reply becomes another version of the stored one."""

    idempotency_key: str | None = None
    swipes: Swipes = "never"
    swipe: TurnStart | None = None
    appends: bool = True

    async def begin(self, facts: TurnFacts, request: ChatRequest) -> Started | Replay:
        incoming = facts.incoming
        if self.idempotency_key:
            users = [n for n, m in enumerate(incoming) if m.role == "user"]
            if users:
                incoming = list(incoming)
                incoming[users[-1]] = incoming[users[-1]].model_copy(update={"key": self.idempotency_key})
        begun = await begin_turn(
            sessions, facts.session_id, incoming, client_ids=[m.id for m in request.messages],
            setup=facts.setup, setup_changed=facts.setup_changed, idempotency_key=self.idempotency_key,
            swipes=self.swipes if self.swipe is not None else "never", guard=facts.guard)
        if isinstance(begun, Replay):
            return await self.swipe.begin(facts, request) if begun.swipe and self.swipe else begun
        return Started(lease=begun, window=begun.window)


def speaks(request: ChatRequest) -> bool:
    """Whether the turn's reply is synthesized now (`on_click` leaves it to the client)."""
    return request.tts_enabled and request.tts_mode != "on_click"


def stored(role: str, content: str, **fields: object) -> StoredMessage:
    return StoredMessage.model_validate(
        {"id": new_message_id(), "role": role, "content": content, "at": now(),
         "tokens": message_tokens(content), **fields})


def _replayed(replay: Replay, session_id: str, model: str) -> ChatReply:
    """A retry's answer: the reply stored for the same turn, generated once."""
    reply = replay.reply
    return ChatReply(content=reply.content, usage=ChatUsage(prompt_tokens=0, completion_tokens=0),
                     session_id=session_id, model=model, finish_reason="stored", cut=reply.cut,
                     message_id=reply.id or None, user_message_id=replay.user_message.id or None,
                     replayed=True)


async def abandon_turn(claim: TurnClaim) -> None:
    """A turn that failed before its reply was stored. A session the client never learned
    of goes, with the slot it took; otherwise the user's message stays (a retry completes
    it) and the lease is released."""
    with anyio.CancelScope(shield=True):
        if claim.new_session:
            if await sessions.discard(claim.lease) and claim.slot_taken:
                await limiter.release(claim.occupant)
        else:
            await sessions.end_turn(claim.lease)


async def prepare(request: ChatRequest, user: User, start: TurnStart, *,
                  extra_system: str | None = None) -> PreparedTurn | ChatReply:
    """Checks the turn, then begins it; a retry of a turn already answered gets its reply.
    `extra_system`: the caller's own instructions (the OpenAI API's system messages), told
    after the persona and never stored in the transcript.

    A chat turn of a session whose last turn this process served begins on that turn's
    lookup (`known_lookups`), which its begin script checks; when the check fails (nothing
    written), the turn reads its lookup and is checked and begun again."""
    await quotas.check(user, "tts" if speaks(request) else "chat")
    model = await checked_model(request.model)
    try:
        return await _checked_and_begun(request, user, start, model, extra_system, reuse=True)
    except StaleLookup:
        known_lookups.forget(user.id, request.session_id)
        return await _checked_and_begun(request, user, start, model, extra_system, reuse=False)


async def _checked_and_begun(request: ChatRequest, user: User, start: TurnStart, model: str,
                             extra_system: str | None, *, reuse: bool) -> PreparedTurn | ChatReply:
    """`prepare` past the quota and the model. `reuse`: the copy of the session's lookup
    may stand for it."""
    settings = get_settings()
    appends = start.appends
    new_session = request.session_id is None
    given = request.user_persona
    persona_reads = persona_keys(user) if given is None else ()
    # The character this turn most likely plays, read beside the session: the one it
    # names, or the one this process last saw the session play.
    likely = request.character_id or session_characters.get((user.id, request.session_id))
    character_key = character_service.read_key(likely) if likely else None
    reads = (*persona_reads, character_key) if character_key else persona_reads
    copies = isinstance(start, AppendTurn)  # only a chat turn's begin script checks a copy
    known = known_lookups.get(user.id, request.session_id, reads) if reuse and copies else None
    upstreams = base_urls(settings.llm_base_url, settings.llm_base_urls)
    if known is not None:  # the upstream's breaker is read beside the begin script, below
        found = known.lookup
    else:
        breakers = stale_breakers(upstreams)
        lookup = owned_session_and(
            user, request.session_id, sessions, reads,
            sizes_if_new=(conversation_index.listing_key(user.id),) if appends else ())
        if breakers is None:  # read within the last second: the common case under load
            found = await lookup
        else:  # the upstream's breaker, read beside the session rather than after it
            found, _ = await asyncio.gather(lookup, breakers)
    scoped, meta, values, sizes = found.scoped, found.meta, found.values, found.sizes
    stored_persona = values[:len(persona_reads)]
    if meta is None and not appends:
        raise NotFound("no such session", code="session_not_found")
    ensure_session_owner(meta, user)
    if meta is None:  # a new conversation: the user's list stays bounded
        await conversation_index.ensure_room(user.id, listed=sizes[0] if sizes else None)
    character_id = request.character_id or (meta.character_id if meta else None)
    if character_id is None:
        character = None
    elif character_key and character_id == likely:
        character = character_service.character_read(character_id, values[-1])
    else:
        character = await character_service.get_character(character_id)
    if character_id:
        session_characters.remember((user.id, scoped.session_id), character_id)
    persona = request.persona or (meta.persona if meta else None)
    scenario = request.scenario or (Scenario.model_validate(meta.scenario)
                                    if meta and meta.scenario else None)
    scenario_fields = scenario.model_dump(exclude_none=True) if scenario else None
    setup_changed = meta is None or (character_id, persona, scenario_fields) != (
        meta.character_id, meta.persona, meta.scenario)
    played = given if given is not None else persona_from(stored_persona)
    setup = RoleplaySetup.merge(character, persona, scenario,
                                user_name=played.name if played else None,
                                user_description=played.description if played else None)
    language = settings.persona_language
    opening = appends and not request.messages
    greetings = greetings_of(character, setup.macro_names(language)) if character and opening else []
    if opening and character is None:
        raise BadRequest("messages is empty: send a message, or a character_id for its opening",
                         code="empty_conversation")
    greeting = pick_greeting(greetings, request.greeting_index) if opening else None
    ratio = await token_ratio(model)
    pins = meta.pins if meta else []
    context = ContextManager(settings, (await budget_for(model, settings)).planning)
    incoming = [stored(m.role, m.content) for m in request.messages]
    plain_persona, _ = persona_with_lore(setup, None, [], language=language, settings=settings,
                                         max_tokens=request.max_tokens, ratio=ratio)
    context.check_turn(context.system_prompt(with_pins(plain_persona, pins, language),
                                             meta.summary if meta else None, language),
                       request.max_tokens, ratio, [m.tokens for m in incoming])

    occupant = occupant_id(user)
    admission = await limiter.ensure_admitted(user)
    facts = TurnFacts(session_id=scoped.key, meta=meta, incoming=incoming, setup_changed=setup_changed,
                      setup=TurnSetup(owner=user.id, character_id=character_id, persona=persona,
                                      scenario=scenario_fields),
                      guard=known.guard if known is not None else None)
    breakers = stale_breakers(upstreams) if known is not None else None
    beside = asyncio.ensure_future(breakers) if breakers is not None else None
    try:
        started = await start.begin(facts, request)
    except BaseException:
        if beside is not None:
            _dropped(beside)
        if new_session and admission.new:
            with anyio.CancelScope(shield=True):
                await limiter.release(occupant)
        raise
    if beside is not None:
        await _settled(beside)
    if setup_changed:  # written by the begin: a copy would no longer hold
        known_lookups.forget(user.id, scoped.session_id)
    elif known is None and copies:
        known_lookups.remember(user.id, found, reads)
    if isinstance(started, Replay):
        return _replayed(started, scoped.session_id, model)
    claim = TurnClaim(lease=started.lease, new_session=new_session, occupant=occupant,
                      slot_taken=admission.new)
    try:
        if opening and started.window.length:
            raise BadRequest("messages is empty: this session has already begun",
                             code="empty_conversation")
        async with LeaseKeeper(sessions, started.lease):  # the prompt may wait on the upstream
            window, plan, ratio, failed_at, recalled = await _fitted(
                started.window, scoped, meta, model=model, ratio=ratio, setup=setup,
                greeting=greeting, lore_book=character.character_book if character else None,
                request=request, extra_system=extra_system, summarizes=appends)
    except BaseException:
        await abandon_turn(claim)
        raise
    turn = PreparedTurn(session_id=scoped.key, client_session_id=scoped.session_id, model=model,
                        request=request, window=window, plan=plan, ratio=ratio, claim=claim,
                        summary_failed_at=failed_at, greeting=greeting,
                        voice_id=character.voice_id if character else None, user=user,
                        greetings=greetings, store=started.store, recalled=recalled,
                        character_id=character_id)
    if started.reply_id:
        turn.reply_id = started.reply_id
    return turn


async def _settled(beside: asyncio.Future[None]) -> None:
    """Waits for the breakers' read made beside the begin script. Its error is not the
    turn's: the upstream call reads a breaker again while its copy is stale."""
    await asyncio.wait([beside])
    if not beside.cancelled():
        beside.exception()  # taken, so it is not logged as never retrieved


def _dropped(beside: asyncio.Future[None]) -> None:
    """The breakers' read of a turn that failed to begin: cancelled, or its error taken."""
    if not beside.cancel() and not beside.cancelled():
        beside.exception()


async def _fitted(
    window: Window, scoped: ScopedSession, meta: SessionMeta | None, *, model: str, ratio: float,
    setup: RoleplaySetup, greeting: str | None, lore_book: CharacterBook | None, request: ChatRequest,
    extra_system: str | None, summarizes: bool,
) -> tuple[Window, ContextPlan, float, float | None, list[str]]:
    """The begun turn's prompt: persona, lore, pins, the caller's instructions and the
    episodes memory recalls, fitted in the context (a chat turn may summarize first; a
    stored opening line asks nobody). Answers with the ids of the episodes recalled."""
    settings = get_settings()
    language = settings.persona_language
    session_id = scoped.key
    recent = [m.content for m in window.messages] if lore_book and lore_book.entries else []
    persona_text, lore = persona_with_lore(
        setup, lore_book, recent, language=language,
        settings=settings, max_tokens=request.max_tokens, ratio=ratio, summary=window.summary)
    persona_text = with_pins(persona_text, meta.pins if meta else [], language)
    if extra_system:
        persona_text = f"{persona_text}\n\n{extra_system}"
    if summarizes and lore is not None and greeting is None:
        await save_fired(session_id, lore)
    failed_at = meta.summary_failed_at if meta else None
    backing_off = failed_at is not None and time.time() - failed_at < settings.summary_retry_after_s

    async def summarize_now() -> Window | None:
        nonlocal failed_at
        summarized = await Summarizer(sessions).summarize(session_id, max_passes=1)
        if summarized.outcome == "failed":
            failed_at = time.time()  # and no second try off the request path either
        return await sessions.read_window(session_id) if summarized.outcome == "summarized" else None

    if greeting is not None:  # a stored opening line: no upstream is asked anything
        context = ContextManager(settings)
        plan = context.plan(window, persona=persona_text, summary=window.summary,
                            max_tokens=request.max_tokens, ratio=ratio,
                            character_name=setup.name, language=language)
        return window, plan, ratio, failed_at, []
    recalled = await _recalled(session_id, window, persona_text, model=model, ratio=ratio,
                               max_tokens=request.max_tokens)
    window, plan, ratio = await fit_context(
        window, model=model, persona=persona_text, max_tokens=request.max_tokens,
        character_name=setup.name, language=language,
        summarize=summarize_now if summarizes and not backing_off else None,
        memory=recalled.block if recalled else None)
    return window, plan, ratio, failed_at, recalled.ids if recalled else []


async def _recalled(session_id: str, window: Window, persona: str, *, model: str, ratio: float,
                    max_tokens: int) -> Recall | None:
    """The episodes worth recalling, within what the persona and summary leave for them."""
    settings = get_settings()
    if window.memory_rev == 0 or window.watermark < 0 or settings.memory_tokens == 0:
        return None  # nothing was ever folded: no count, no lookup
    context = ContextManager(settings, (await budget_for(model, settings)).planning)
    system = context.system_prompt(persona, window.summary, settings.persona_language)
    budget = context.memory_budget(message_tokens(system), max_tokens, ratio)
    return await recall(session_id, window, budget_tokens=budget,
                        language=settings.persona_language)

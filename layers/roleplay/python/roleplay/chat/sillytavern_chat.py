"""SillyTavern chat files: a session exported as SillyTavern's JSONL chat, and such a file
imported as a new session of the caller.

The format is SillyTavern's own, as its release 1.12.6 (SillyTavern/SillyTavern, commit
ba6f7b7a) writes and reads it:

- `public/script.js` `saveChat`: the first line is the header `{user_name, character_name,
  create_date, chat_metadata}`, then one `JSON.stringify`'d message a line, joined by
  `\\n` (no newline at the end: `src/endpoints/chats.js` `/save`).
- `sendMessageAsUser`: a user's line is `{name, is_user: true, is_system: false,
  send_date, mes, extra}`; `saveReply`: a character's adds `swipe_id`, `swipes` (every
  version; `mes` is the selected one) and `swipe_info` (a `{send_date, extra}` a swipe);
  `getFirstMessage`: the greeting is the chat's first line, the character's, its alternate
  greetings as swipes. Code reads `mes.extra.type` unguarded, so `extra` is always written.
- `public/scripts/slash-commands.js` `sendNarratorMessage`: a narrator line (`extra.type`
  `narrator`, name `System`, avatar `img/five.png`) is what `public/scripts/openai.js`
  `setOpenAIMessages` sends as a system message; our system messages are written as one.
  `is_system: true` marks a line SillyTavern keeps out of the prompt (its own notes, /hide):
  import skips those.
- `public/scripts/RossAscends-mods.js`: `humanizedDateTime` (`2024-09-28@01h02m36s`, the
  header's `create_date` and the chat's file name) and `getMessageTimeStamp` (`September
  28, 2024 1:02am`, each `send_date`); written in UTC, SillyTavern writes its local time.
  `public/scripts/utils.js` `parseTimestamp` is what import reads as a `send_date`: unix
  milliseconds, ISO 8601 (later releases, and `importRisuChat`), both formats above, and
  `2024-6-5 @14h 56m 50s 682ms` (`src/util.js` `humanizedISO8601DateTime`); naive times
  are taken as UTC, anything else is the time of import.
- `src/endpoints/chats.js` `/import`: a `jsonl` file's first line must be a header;
  `flattenChubChat`: Chub's `mes` and swipes may be `{message}` objects. `/export` and
  script.js's download: the file as it is, `application/octet-stream`, named after the
  chat file, `<character> - <humanizedDateTime>.jsonl`.

Swipes become the reply's alternatives (`chat.control.alternatives`, at most
`MAX_ALTERNATIVES`, the oldest unselected going first, as regenerate keeps them); `mes`
wins over the swipe it selects. A file's first message, when it is the character's, is
its greeting (SillyTavern starts every chat so; the prompt treats a leading character
line so too). An import schedules no summary: the next turn asks for one when due, as for
any session, so importing never waits for or loads the LLM.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import anyio.to_thread
from pydantic import BaseModel, Field

from roleplay.characters import service as character_service
from roleplay.characters.cards.card_file import uploaded_file
from roleplay.characters.user_persona import load_user_persona
from roleplay.chat.control.alternatives import MAX_ALTERNATIVES, selected_index, versions
from roleplay.chat.control.service import own_session
from roleplay.core.errors import ApiError, BadRequest, Conflict, PayloadTooLarge
from roleplay.core.identity import User
from roleplay.core.settings import Settings, get_settings
from roleplay.core.token_counter import message_tokens
from roleplay.sessions import conversation_index
from roleplay.sessions.scope import owned_session
from roleplay.sessions.store import Role, SessionStore, StoredMessage, TurnSetup, new_message_id, now
from roleplay.sessions.transcript_import import import_transcript

ExportFormat = Literal["sillytavern"]
MEDIA_TYPE = "application/octet-stream"
"""What SillyTavern's own export downloads a `.jsonl` chat as (script.js, `download`)."""
DEFAULT_USER_NAME = "User"
"""SillyTavern's `default_user_name`: the caller has no persona."""
DEFAULT_CHARACTER_NAME = "Assistant"
"""SillyTavern's `neutralCharacterName`: a session without a (still existing) character."""
NARRATOR_NAME = "System"
SYSTEM_AVATAR = "img/five.png"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
_MONTH_NUMBERS = {name[:3].lower(): n for n, name in enumerate(MONTHS, 1)}
_LATEST_MS = 253402300799999
"""9999-12-31T23:59:59.999Z: the latest send_date read as a time."""

_FILE = {"schema": {"type": "string", "format": "binary"}}
UPLOAD: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": _FILE,
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": _FILE}}}}}}
"""The import's body in OpenAPI: the file itself (any content type), or the multipart
field `file`."""

sessions = SessionStore()


class ImportedChat(BaseModel):
    session_id: str
    character_id: str
    message_count: int = Field(description="Messages stored in the new session.")
    user_turns: int
    skipped_system_messages: int = Field(
        description="Lines marked `is_system` (SillyTavern keeps them out of the prompt), "
        "not imported.")


@dataclass(frozen=True)
class ChatExport:
    body: bytes
    filename: str
    """As SillyTavern names the chat: `<character> - <humanizedDateTime>.jsonl`."""
    ascii_filename: str
    """The same for clients that read only `filename=`: a Korean name is often all non-ASCII."""

    @property
    def content_disposition(self) -> str:
        """An attachment, named in UTF-8 (RFC 6266's `filename*`) with the ASCII fallback."""
        return (f"attachment; filename=\"{self.ascii_filename}\"; "
                f"filename*=UTF-8''{quote(self.filename, safe='')}")


@dataclass(frozen=True)
class ChatFile:
    """A chat file read: its messages as they will be stored."""

    messages: list[StoredMessage]
    skipped_system: int


@dataclass(frozen=True)
class ImportLimits:
    max_bytes: int
    max_messages: int
    max_line_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> ImportLimits:
        return cls(settings.sillytavern_import_max_bytes, settings.sillytavern_import_max_messages,
                   settings.sillytavern_import_max_line_bytes)


# --- dates ---------------------------------------------------------------------------------


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def humanized_date_time(at: float) -> str:
    """`humanizedDateTime`: `2024-09-28@01h02m36s`."""
    d = _utc(at)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}@{d.hour:02d}h{d.minute:02d}m{d.second:02d}s"


def message_time_stamp(at: float) -> str:
    """`getMessageTimeStamp`: `September 28, 2024 1:02am` (to the minute)."""
    d = _utc(at)
    meridiem = "pm" if d.hour >= 12 else "am"
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year} {d.hour % 12 or 12}:{d.minute:02d}{meridiem}"


_DIGITS = re.compile(r"\d+", re.ASCII)
_MERIDIEM = re.compile(r"(\w+)\s(\d{1,2}),\s(\d{4})\s(\d{1,2}):(\d{1,2})(am|pm)", re.IGNORECASE)
_HUMANIZED = (
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})@(\d{1,2})h(\d{1,2})m(\d{1,2})s(?:(\d{1,3})ms)?",
               re.ASCII),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) @(\d{1,2})h (\d{1,2})m (\d{1,2})s (\d{1,3})ms",
               re.ASCII),
)


def _moment(year: int, month: int, day: int, hour: int, minute: int, second: int = 0,
            micro: int = 0) -> float | None:
    try:
        return round(datetime(year, month, day, hour, minute, second, micro, UTC).timestamp(), 3)
    except (ValueError, OverflowError):
        return None


def parse_send_date(value: object) -> float | None:
    """A `send_date` as SillyTavern's `parseTimestamp` reads it, in seconds; None when it
    is none of its formats."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _DIGITS.fullmatch(value)):
        ms = float(value)
        return round(ms / 1000, 3) if math.isfinite(ms) and 0 <= ms <= _LATEST_MS else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.match(r"\d{4}-\d{2}-\d{2}", text, re.ASCII):
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return round((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp(), 3)
    found = _MERIDIEM.search(text)
    if found:
        month = _MONTH_NUMBERS.get(found[1][:3].lower())
        hour = int(found[4]) % 12 + (12 if found[6].lower() == "pm" else 0)
        return _moment(int(found[3]), month, int(found[2]), hour, int(found[5])) if month else None
    for pattern in _HUMANIZED:
        found = pattern.search(text)
        if found:
            year, month, day, hour, minute, second = (int(part) for part in found.groups()[:6])
            milli = int(found[7]) if found[7] else 0
            return _moment(year, month, day, hour, minute, second, milli * 1000)
    return None


# --- export --------------------------------------------------------------------------------


def _line(value: dict[str, Any]) -> str:
    """As `JSON.stringify` writes it: compact, non-ASCII as it is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sillytavern_message(message: StoredMessage, user_name: str, character_name: str) -> dict[str, Any]:
    """One stored message as SillyTavern saves one of its kind."""
    sent = message_time_stamp(message.at)
    if message.role == "user":
        return {"name": user_name, "is_user": True, "is_system": False, "send_date": sent,
                "mes": message.content, "extra": {}}
    if message.role == "system":
        return {"name": NARRATOR_NAME, "is_user": False, "is_system": False, "send_date": sent,
                "mes": message.content, "force_avatar": SYSTEM_AVATAR, "extra": {"type": "narrator"}}
    texts = versions(message)
    return {"name": character_name, "is_user": False, "is_system": False, "send_date": sent,
            "mes": message.content, "extra": {}, "swipe_id": selected_index(message),
            "swipes": texts, "swipe_info": [{"send_date": sent, "extra": {}} for _ in texts]}


def chat_jsonl(messages: Sequence[StoredMessage], *, user_name: str, character_name: str,
               created_at: float) -> bytes:
    """The whole chat file: the header, then a line per message."""
    header = {"user_name": user_name, "character_name": character_name,
              "create_date": humanized_date_time(created_at), "chat_metadata": {}}
    lines = [_line(header), *(_line(sillytavern_message(m, user_name, character_name))
                              for m in messages)]
    return "\n".join(lines).encode("utf-8")


def chat_filenames(character_name: str, created_at: float) -> tuple[str, str]:
    """`<character> - <humanizedDateTime>.jsonl` without what sanitize-filename drops, and
    its ASCII-only form (`chat` standing for a name with no ASCII letter)."""
    stamp = humanized_date_time(created_at)
    name = re.sub(r'[\x00-\x1f\x7f/\\?<>:*|"]+', "", character_name).strip()[:80]
    plain = re.sub(r"[^A-Za-z0-9 ._()-]+", "", name).strip(" .") or "chat"
    return f"{name or DEFAULT_CHARACTER_NAME} - {stamp}.jsonl", f"{plain} - {stamp}.jsonl"


async def _character_name(character_id: str | None) -> str:
    if not character_id:
        return DEFAULT_CHARACTER_NAME
    try:
        return (await character_service.get_character(character_id)).name
    except ApiError:  # deleted since: the chat still exports
        return DEFAULT_CHARACTER_NAME


async def export_chat(session_id: str, user: User) -> ChatExport:
    """The caller's session as SillyTavern's chat file; another user's is 404."""
    key, meta = await own_session(session_id, user)
    messages = await sessions.transcript(key)
    character_name = await _character_name(meta.character_id)
    persona = await load_user_persona(user)
    created_at = meta.created_at or now()
    body = await anyio.to_thread.run_sync(partial(
        chat_jsonl, messages, user_name=persona.name if persona else DEFAULT_USER_NAME,
        character_name=character_name, created_at=created_at))
    return ChatExport(body, *chat_filenames(character_name, created_at))


# --- import --------------------------------------------------------------------------------


def _refused(message: str, code: str) -> BadRequest:
    return BadRequest(message, code=code)


def check_size(body: bytes, limits: ImportLimits) -> None:
    if len(body) > limits.max_bytes:
        raise PayloadTooLarge(f"the chat file is over {limits.max_bytes} bytes "
                              "(SILLYTAVERN_IMPORT_MAX_BYTES)", code="chat_file_too_large")


def _text(value: object) -> str | None:
    """A message text: a string, or Chub's `{message}` (`flattenChubChat`); lone
    surrogates (JSON can escape them, Redis cannot store them) become U+FFFD."""
    if isinstance(value, dict):
        value = value.get("message")
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return re.sub("[\ud800-\udfff]", "\ufffd", value)
    return value


def _swipe_index(value: object, count: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() and 0 <= value < count else None


def swipes_to_alternatives(content: str, swipes: object,
                           swipe_id: object) -> tuple[list[str] | None, int | None]:
    """A character message's swipes as our alternatives and the selected one: `mes` is the
    selected text (SillyTavern may not have copied an edit into its swipe); past
    `MAX_ALTERNATIVES` the oldest unselected ones go, as regenerate drops them."""
    if not isinstance(swipes, list) or not swipes:
        return None, None
    texts = [_text(item) or "" for item in swipes]
    chosen = _swipe_index(swipe_id, len(texts))
    if chosen is None:
        chosen = texts.index(content) if content in texts else len(texts)
        if chosen == len(texts):
            texts.append(content)
    texts[chosen] = content
    while len(texts) > MAX_ALTERNATIVES:
        oldest = 0 if chosen != 0 else 1
        texts.pop(oldest)
        chosen -= 1 if oldest < chosen else 0
    return (texts, chosen) if len(texts) > 1 else (None, None)


def _json_object(line: bytes, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _refused(f"line {number} is not UTF-8 text", "invalid_jsonl") from None
    except (ValueError, RecursionError):
        raise _refused(f"line {number} is not JSON: a SillyTavern chat file (.jsonl) holds one "
                       "JSON object a line", "invalid_jsonl") from None
    if not isinstance(value, dict):
        raise _refused(f"line {number} is not a JSON object", "invalid_jsonl")
    return value


def _is_header(line: dict[str, Any]) -> bool:
    return "mes" not in line and any(
        name in line for name in ("user_name", "character_name", "chat_metadata"))


def _stored(line: dict[str, Any], number: int, received: float) -> StoredMessage | None:
    """A message line as we store it; None for an `is_system` line."""
    if line.get("is_system"):
        return None
    content = _text(line.get("mes"))
    if content is None:
        raise _refused(f"line {number} has no message text (`mes`)", "invalid_message")
    extra = line.get("extra")
    narrator = isinstance(extra, dict) and extra.get("type") == "narrator"
    role: Role = "user" if line.get("is_user") else "system" if narrator else "assistant"
    alternatives, selected = (swipes_to_alternatives(content, line.get("swipes"), line.get("swipe_id"))
                              if role == "assistant" else (None, None))
    sent = parse_send_date(line.get("send_date"))
    return StoredMessage(id=new_message_id(), role=role, content=content,
                         at=received if sent is None else sent,
                         tokens=message_tokens(content), alternatives=alternatives,
                         selected=selected)


def read_chat_file(body: bytes, content_type: str | None, limits: ImportLimits) -> ChatFile:
    """A SillyTavern chat file (the body, or its multipart field `file`) read whole, or
    a 4xx naming what is wrong with it. CPU-bound: callers run it in a worker thread."""
    check_size(body, limits)
    data, _ = uploaded_file(body, content_type)
    lines = [(number, line.removesuffix(b"\r"))
             for number, line in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1)
             if line.strip()]
    if not lines:
        raise _refused("the chat file is empty", "empty_chat_file")
    if len(lines) - 1 > limits.max_messages:
        raise PayloadTooLarge(f"the chat file has {len(lines) - 1} messages; at most "
                              f"{limits.max_messages} are imported (SILLYTAVERN_IMPORT_MAX_MESSAGES)",
                              code="too_many_messages")
    for number, line in lines:
        if len(line) > limits.max_line_bytes:
            raise PayloadTooLarge(f"line {number} is over {limits.max_line_bytes} bytes "
                                  "(SILLYTAVERN_IMPORT_MAX_LINE_BYTES)", code="line_too_long")
    first, *rest = lines
    header = _json_object(first[1], first[0])
    if not _is_header(header):
        raise _refused("the first line is not a SillyTavern chat header ({user_name, "
                       "character_name, create_date, chat_metadata})", "missing_header")
    received = now()
    messages: list[StoredMessage] = []
    skipped = 0
    for number, line in rest:
        message = _stored(_json_object(line, number), number, received)
        if message is None:
            skipped += 1
        else:
            messages.append(message)
    if not messages:
        raise _refused("the chat file holds no message to import", "no_messages")
    if messages[0].role == "assistant":
        messages[0] = messages[0].model_copy(update={"greeting": True})
    return ChatFile(messages, skipped)


async def import_chat(body: bytes, content_type: str | None, character_id: str,
                      user: User) -> ImportedChat:
    """A new session of the caller with `character_id` holding the file's conversation;
    nothing is stored unless the whole file reads."""
    settings = get_settings()
    limits = ImportLimits.of(settings)
    check_size(body, limits)  # at once, before the character is read
    character = await character_service.get_character(character_id)
    chat = await anyio.to_thread.run_sync(read_chat_file, body, content_type, limits)
    user_turns = sum(1 for message in chat.messages if message.role == "user")
    if settings.max_turns and user_turns > settings.max_turns:
        raise _refused(f"the chat has {user_turns} user messages; a session here holds at most "
                       f"{settings.max_turns} (MAX_TURNS)", "too_many_turns")
    await conversation_index.ensure_room(user.id)
    scoped, _ = await owned_session(user, None, sessions)
    setup = TurnSetup(owner=user.id, character_id=character.id, persona=None, scenario=None)
    if not await import_transcript(scoped.key, chat.messages, setup=setup, store=sessions):
        raise Conflict("a session with the new id already exists; import again",
                       code="session_exists")
    first_user = next((m.content for m in chat.messages if m.role == "user"), None)
    await conversation_index.touch(user.id, scoped.session_id, scoped.key, at=now(),
                                   character_id=character.id, first_user_message=first_user)
    return ImportedChat(session_id=scoped.session_id, character_id=character.id,
                        message_count=len(chat.messages), user_turns=user_turns,
                        skipped_system_messages=chat.skipped_system)

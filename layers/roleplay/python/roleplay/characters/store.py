"""Where characters live: Redis by default, DynamoDB when `CHARACTERS_TABLE` is set.

Both stores keep the same contract (tests/characters/test_character_store.py runs it on each);
paging uses an opaque cursor, so callers never depend on either backend's layout.

A stored character that no longer loads (stored before import checked it, see
`storable`) answers 409 `character_unreadable` when asked for by id, carrying the owner
read from it as leniently as can be, so its owner can still delete it; a list page
leaves it out and logs it, and never fails for everyone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import anyio.lowlevel
from pydantic import ValidationError

from roleplay.characters.model import STORED, Character, CharacterPage
from roleplay.core.errors import BadRequest, Conflict, PayloadTooLarge
from roleplay.core.redis_client import get_redis, read_strings
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import DynamoDBServiceResource, Table

logger = logging.getLogger("roleplay.characters.store")

MAX_PAGE = 100
MAX_PAGE_BYTES = 8 * 1024 * 1024
"""Of stored characters on one list page: a hundred cards of 8 MB would be a response
of 800 MB, read, parsed and written on the event loop."""
_REDIS_CURSOR = re.compile(r"^\d{13}:[A-Za-z0-9_-]{1,64}$")
_UNREADABLE = (ValidationError, ValueError, RecursionError, TypeError)
"""What loading a stored character can raise when its data is not one any more."""


class UnreadableCharacter(Conflict):
    """A stored character that does not load; `owner` as read from its data, if it could be."""

    code = "character_unreadable"

    def __init__(self, character_id: str, owner: str | None) -> None:
        super().__init__(f"character {character_id!r} is stored but its data cannot be read "
                         "any more; its owner may delete it")
        self.owner = owner


class CharacterStore(Protocol):
    async def create(self, character: Character, raw: str | None = None) -> None:
        """`raw`: the character's JSON when the caller already has it (`storable`)."""

    async def get(self, character_id: str) -> Character | None:
        """None when there is no such character; `UnreadableCharacter` when its data
        does not load."""

    async def replace(self, character: Character, raw: str | None = None) -> None: ...

    async def delete(self, character_id: str) -> bool: ...

    async def list(self, limit: int, cursor: str | None = None) -> CharacterPage: ...

    async def existing(self, character_ids: Sequence[str]) -> set[str]:
        """Which of `character_ids` are stored."""


def _bad_cursor() -> BadRequest:
    return BadRequest("cursor is not one this server handed out", code="invalid_cursor")


def _skipped(character_id: str, error: BaseException) -> None:
    logger.warning("character %s left out of a list: its stored data does not load (%s)",
                   character_id, type(error).__name__)


def _top_level_string(raw: str, name: str) -> str | None:
    """A top-level string field of a stored character's JSON, read without loading it
    (it may not load). pydantic writes fields in order, and `owner` and `created_at` come
    after every field that nests, so their last occurrence is the character's own."""
    values = re.findall(rf'"{name}":("(?:[^"\\]|\\.)*")', raw)
    try:
        value = json.loads(values[-1]) if values else None
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def stored_character(character_id: str, raw: str | bytes | None) -> Character | None:
    """The character whose stored JSON is `raw` (None: not stored): what
    `RedisCharacterStore.get` answers, for a caller that read the key itself."""
    if not raw:
        return None
    try:
        return Character.model_validate_json(raw, context=STORED)
    except _UNREADABLE:
        raise UnreadableCharacter(character_id, _top_level_string(str(raw), "owner")) from None


class RedisCharacterStore:
    """A JSON string per character plus a lexically sorted index for stable paging."""

    @staticmethod
    def _index_member(character: Character) -> str:
        created_ms = int(character.created_at.timestamp() * 1000)
        return f"{created_ms:013d}:{character.id}"

    async def create(self, character: Character, raw: str | None = None) -> None:
        """The character, then its index entry: two steps, since on a cluster they lie in
        different slots. An entry never names a character not yet written, and a failed
        second step takes the first back, so a create that failed leaves nothing."""
        keys, redis = redis_keys(), await get_redis()
        key = keys.character(character.id)
        await redis.set(key, raw or character.model_dump_json())
        try:
            await redis.zadd(keys.characters_index, {self._index_member(character): 0})
        except BaseException:
            with anyio.CancelScope(shield=True):
                await redis.delete(key)
            raise

    async def get(self, character_id: str) -> Character | None:
        return stored_character(character_id,
                                await (await get_redis()).get(redis_keys().character(character_id)))

    async def replace(self, character: Character, raw: str | None = None) -> None:
        redis = await get_redis()
        await redis.set(redis_keys().character(character.id), raw or character.model_dump_json(),
                        xx=True)

    async def delete(self, character_id: str) -> bool:
        """The character and its index entry; the entry of one whose creation time cannot
        be read is left to `list`, which drops entries whose character is gone."""
        keys, redis = redis_keys(), await get_redis()
        raw = await redis.get(keys.character(character_id))
        if not raw:
            return False
        created = _top_level_string(str(raw), "created_at")
        deleted = await redis.delete(keys.character(character_id))
        try:
            created_ms = int(datetime.fromisoformat(created or "").timestamp() * 1000)
        except ValueError:
            return bool(deleted)
        await redis.zrem(keys.characters_index, f"{created_ms:013d}:{character_id}")
        return bool(deleted)

    async def existing(self, character_ids: Sequence[str]) -> set[str]:
        keys, redis = redis_keys(), await get_redis()
        async with redis.pipeline(transaction=False) as pipe:
            for character_id in character_ids:
                pipe.exists(keys.character(character_id))
            found = await pipe.execute()
        return {character_id for character_id, exists in zip(character_ids, found, strict=True)
                if exists}

    async def list(self, limit: int, cursor: str | None = None) -> CharacterPage:
        """Up to `limit` characters after `cursor`, and fewer when they would pass
        `MAX_PAGE_BYTES` (the next page goes on from the last one given)."""
        if cursor is not None and not _REDIS_CURSOR.match(cursor):
            raise _bad_cursor()
        keys, redis = redis_keys(), await get_redis()
        start = f"({cursor}" if cursor else "-"
        members = [str(m) for m in await redis.zrangebylex(
            keys.characters_index, start, "+", start=0, num=limit + 1
        )]
        page = await self._within_bytes(members[:limit])
        more = len(members) > len(page)
        if not page:
            return CharacterPage(items=[])
        raws = await read_strings([keys.character(m.split(":", 1)[1]) for m in page])
        gone = [member for member, raw in zip(page, raws, strict=True) if not raw]
        if gone:  # a delete that failed between its two steps: the character is gone
            await redis.zrem(keys.characters_index, *gone)
        items: list[Character] = []
        for member, raw in zip(page, raws, strict=True):
            if raw:
                try:
                    items.append(Character.model_validate_json(raw, context=STORED))
                except _UNREADABLE as error:
                    _skipped(member.split(":", 1)[1], error)
                await anyio.lowlevel.checkpoint()  # one large character at a time
        return CharacterPage(items=items, next_cursor=page[-1] if more else None)

    @staticmethod
    async def _within_bytes(members: Sequence[str]) -> Sequence[str]:
        """The first of `members` whose characters together stay within `MAX_PAGE_BYTES`
        (always the first), their sizes asked before anything is read."""
        if len(members) <= 1:
            return members
        keys, redis = redis_keys(), await get_redis()
        async with redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.strlen(keys.character(member.split(":", 1)[1]))
            sizes = await pipe.execute()
        total = 0
        for taken, size in enumerate(sizes):
            total += int(size)
            if total > MAX_PAGE_BYTES and taken:
                return members[:taken]
        return members


def _dynamo_item(character: Character) -> dict[str, Any]:
    """DynamoDB takes no floats: a card's extensions may hold any JSON number, so numbers
    travel as Decimal and come back as the int or float they were."""
    return cast(dict[str, Any], json.loads(character.model_dump_json(), parse_float=Decimal))


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _from_dynamo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(item) for item in value]
    return value


def _character(item: dict[str, Any]) -> Character:
    try:
        return Character.model_validate(_from_dynamo(item), context=STORED)
    except _UNREADABLE:
        owner = item.get("owner")
        raise UnreadableCharacter(str(item.get("id")), owner if isinstance(owner, str) else None
                                  ) from None


class DynamoCharacterStore:
    """One item per character, keyed by `id`, for the AWS deploy."""

    def __init__(self, table_name: str) -> None:
        import boto3

        self._resource: DynamoDBServiceResource = boto3.resource("dynamodb")
        self._table: Table = self._resource.Table(table_name)

    async def _put(self, character: Character, *, new: bool = False) -> None:
        from botocore.exceptions import ClientError

        def put() -> None:
            item: dict[str, Any] = {"Item": _dynamo_item(character)}
            if new:
                item["ConditionExpression"] = "attribute_not_exists(id)"
            self._table.put_item(**item)

        try:
            await asyncio.to_thread(put)
        except ClientError as error:
            if "size" in str(error).lower() and "exceed" in str(error).lower():
                raise PayloadTooLarge("the character is larger than a DynamoDB item may be "
                                      "(400 KB); shorten its lorebook or texts",
                                      code="character_too_large") from None
            raise

    async def create(self, character: Character, raw: str | None = None) -> None:
        await self._put(character, new=True)

    async def get(self, character_id: str) -> Character | None:
        response = await asyncio.to_thread(self._table.get_item, Key={"id": character_id})
        item = response.get("Item")
        return _character(item) if item else None

    async def replace(self, character: Character, raw: str | None = None) -> None:
        await self._put(character)

    async def delete(self, character_id: str) -> bool:
        response = await asyncio.to_thread(
            self._table.delete_item, Key={"id": character_id}, ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    async def list(self, limit: int, cursor: str | None = None) -> CharacterPage:
        scan: dict[str, Any] = {"Limit": limit}
        if cursor:
            scan["ExclusiveStartKey"] = {"id": self._decode_cursor(cursor)}
        response = await asyncio.to_thread(self._table.scan, **scan)
        items: list[Character] = []
        for item in response.get("Items", []):
            try:
                items.append(_character(item))
            except UnreadableCharacter as error:
                _skipped(str(item.get("id")), error)
        last = response.get("LastEvaluatedKey")
        next_cursor = self._encode_cursor(str(last["id"])) if last else None
        return CharacterPage(items=items, next_cursor=next_cursor)

    async def existing(self, character_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(character_ids), 100):  # BatchGetItem's most keys
            keys = [{"id": character_id} for character_id in character_ids[start:start + 100]]
            request: Any = {self._table.name: {"Keys": keys, "ProjectionExpression": "id"}}
            while request:
                response = await asyncio.to_thread(self._resource.batch_get_item,
                                                   RequestItems=request)
                found |= {str(item["id"]) for item in response["Responses"].get(self._table.name, [])}
                request = response.get("UnprocessedKeys") or {}
        return found

    @staticmethod
    def _encode_cursor(last_id: str) -> str:
        return base64.urlsafe_b64encode(json.dumps({"id": last_id}).encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str) -> str:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise _bad_cursor() from None
        if not isinstance(decoded, dict) or not isinstance(decoded.get("id"), str):
            raise _bad_cursor()
        return str(decoded["id"])


@lru_cache(maxsize=4)
def _dynamo_store(table_name: str) -> DynamoCharacterStore:
    return DynamoCharacterStore(table_name)


def get_character_store() -> CharacterStore:
    table = get_settings().characters_table
    return _dynamo_store(table) if table else RedisCharacterStore()

"""Where characters live: Redis by default, DynamoDB when `CHARACTERS_TABLE` is set.

Both stores keep the same contract (tests/characters/test_character_store.py runs it on each);
paging uses an opaque cursor, so callers never depend on either backend's layout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio

from roleplay.characters.model import Character, CharacterPage
from roleplay.core.errors import BadRequest, PayloadTooLarge
from roleplay.core.redis_client import get_redis, read_strings
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

MAX_PAGE = 100
_REDIS_CURSOR = re.compile(r"^\d{13}:[A-Za-z0-9_-]{1,64}$")


class CharacterStore(Protocol):
    async def create(self, character: Character) -> None: ...

    async def get(self, character_id: str) -> Character | None: ...

    async def replace(self, character: Character) -> None: ...

    async def delete(self, character_id: str) -> bool: ...

    async def list(self, limit: int, cursor: str | None = None) -> CharacterPage: ...


def _bad_cursor() -> BadRequest:
    return BadRequest("cursor is not one this server handed out", code="invalid_cursor")


class RedisCharacterStore:
    """A JSON string per character plus a lexically sorted index for stable paging."""

    @staticmethod
    def _index_member(character: Character) -> str:
        created_ms = int(character.created_at.timestamp() * 1000)
        return f"{created_ms:013d}:{character.id}"

    async def create(self, character: Character) -> None:
        """The character, then its index entry: two steps, since on a cluster they lie in
        different slots. An entry never names a character not yet written, and a failed
        second step takes the first back, so a create that failed leaves nothing."""
        keys, redis = redis_keys(), await get_redis()
        key = keys.character(character.id)
        await redis.set(key, character.model_dump_json())
        try:
            await redis.zadd(keys.characters_index, {self._index_member(character): 0})
        except BaseException:
            with anyio.CancelScope(shield=True):
                await redis.delete(key)
            raise

    async def get(self, character_id: str) -> Character | None:
        raw = await (await get_redis()).get(redis_keys().character(character_id))
        return Character.model_validate_json(raw) if raw else None

    async def replace(self, character: Character) -> None:
        redis = await get_redis()
        await redis.set(redis_keys().character(character.id), character.model_dump_json(), xx=True)

    async def delete(self, character_id: str) -> bool:
        character = await self.get(character_id)
        if character is None:
            return False
        keys, redis = redis_keys(), await get_redis()
        deleted = await redis.delete(keys.character(character_id))
        await redis.zrem(keys.characters_index, self._index_member(character))
        return bool(deleted)

    async def list(self, limit: int, cursor: str | None = None) -> CharacterPage:
        if cursor is not None and not _REDIS_CURSOR.match(cursor):
            raise _bad_cursor()
        keys, redis = redis_keys(), await get_redis()
        start = f"({cursor}" if cursor else "-"
        members = [str(m) for m in await redis.zrangebylex(
            keys.characters_index, start, "+", start=0, num=limit + 1
        )]
        page, more = members[:limit], len(members) > limit
        if not page:
            return CharacterPage(items=[])
        raws = await read_strings([keys.character(m.split(":", 1)[1]) for m in page])
        gone = [member for member, raw in zip(page, raws, strict=True) if not raw]
        if gone:  # a delete that failed between its two steps: the character is gone
            await redis.zrem(keys.characters_index, *gone)
        items = [Character.model_validate_json(raw) for raw in raws if raw]
        return CharacterPage(items=items, next_cursor=page[-1] if more else None)


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
    return Character.model_validate(_from_dynamo(item))


class DynamoCharacterStore:
    """One item per character, keyed by `id`, for the AWS deploy."""

    def __init__(self, table_name: str) -> None:
        import boto3

        self._table: Table = boto3.resource("dynamodb").Table(table_name)

    async def _put(self, character: Character, *, new: bool = False) -> None:
        from botocore.exceptions import ClientError

        put: dict[str, Any] = {"Item": _dynamo_item(character)}
        if new:
            put["ConditionExpression"] = "attribute_not_exists(id)"
        try:
            await asyncio.to_thread(self._table.put_item, **put)
        except ClientError as error:
            if "size" in str(error).lower() and "exceed" in str(error).lower():
                raise PayloadTooLarge("the character is larger than a DynamoDB item may be "
                                      "(400 KB); shorten its lorebook or texts",
                                      code="character_too_large") from None
            raise

    async def create(self, character: Character) -> None:
        await self._put(character, new=True)

    async def get(self, character_id: str) -> Character | None:
        response = await asyncio.to_thread(self._table.get_item, Key={"id": character_id})
        item = response.get("Item")
        return _character(item) if item else None

    async def replace(self, character: Character) -> None:
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
        items = [_character(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        next_cursor = self._encode_cursor(str(last["id"])) if last else None
        return CharacterPage(items=items, next_cursor=next_cursor)

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

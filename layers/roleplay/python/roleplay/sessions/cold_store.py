"""Where idle conversations wait for their next use (issue 31): files under
`DATA_DIR/conversations`, or S3 when `CONVERSATION_BUCKET` is set.

`conversation_archive` moves a conversation here once it has been idle `SESSION_HOT_TTL_S`
and brings it back whole when it is used again; this module only keeps bytes under a key.
Both stores keep one contract (tests/sessions/test_cold_store.py runs it on each): `put`
replaces the copy at once (a crash mid-write leaves the previous copy or none, never a
torn one), `get` answers None when there is no copy, and deleting a missing key is fine.
Keys are storage ids (`scope.storage_id`), checked against one pattern, so nothing else
ever reaches a path or an object key. A backend that cannot be reached, read or written
is 503 `cold_store_unavailable`: the conversation stays where it was.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio.to_thread

from roleplay.core.errors import ServiceUnavailable
from roleplay.core.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEY = re.compile(r"s[0-9a-f]{40}")
"""A storage id, as `scope.storage_id` makes them."""

T = TypeVar("T")


class ColdStoreUnavailable(ServiceUnavailable):
    code = "cold_store_unavailable"


class ColdStore(Protocol):
    async def put(self, key: str, data: bytes) -> None:
        """Stores `data` under `key`, replacing any copy whole: never a torn one."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The copy under `key`; None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Drops the copy under `key`; a key with no copy is fine."""
        ...


def checked_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValueError(f"not a conversation storage id: {key!r:.60}")
    return key


class FileColdStore:
    """`{directory}/{key[1:3]}/{key}`: 256 folders, so none grows past a few thousand files.

    A write goes to a dot-named temporary file in the same folder, is flushed and fsynced,
    then renamed over the copy (and the folder fsynced, so the rename survives a power
    cut). The temporary name never passes the key pattern, so a crash's leftover is never
    read as a copy.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        checked_key(key)
        return self.directory / key[1:3] / key

    async def put(self, key: str, data: bytes) -> None:
        await _in_thread(functools.partial(self._write, self.path(key), data))

    async def get(self, key: str) -> bytes | None:
        return await _in_thread(functools.partial(self._read, self.path(key)))

    async def delete(self, key: str) -> None:
        await _in_thread(functools.partial(self.path(key).unlink, missing_ok=True))

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with partial.open("xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None


class S3ColdStore:
    """Objects `conversations/{key}` in `CONVERSATION_BUCKET`. A PUT replaces an object
    whole, so S3 needs nothing more for the atomic write. The bucket's lifecycle rule
    (template.yaml) deletes copies left past the retention; the archive deletes the rest."""

    prefix = "conversations/"

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    def _s3(self) -> S3Client:
        # Made on first use, not in __init__: boto3 is slow to import (handlers stay light
        # until they need it), and moto's mock or a Lambda's credentials must be in place.
        with self._client_lock:
            if self._client is None:
                import boto3

                self._client = boto3.client("s3")
            return self._client

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{checked_key(key)}"

    async def put(self, key: str, data: bytes) -> None:
        object_key = self.object_key(key)
        await self._call(lambda: self._s3().put_object(
            Bucket=self.bucket, Key=object_key, Body=data, ContentType="application/octet-stream"))

    async def get(self, key: str) -> bytes | None:
        object_key = self.object_key(key)
        return await self._call(lambda: self._read(object_key), missing_is_none=True)

    async def delete(self, key: str) -> None:
        object_key = self.object_key(key)
        await self._call(lambda: self._s3().delete_object(Bucket=self.bucket, Key=object_key))

    def _read(self, object_key: str) -> bytes:
        body = self._s3().get_object(Bucket=self.bucket, Key=object_key)["Body"]
        try:
            return body.read()
        finally:
            body.close()

    async def _call(self, call: Callable[[], T], *, missing_is_none: bool = False) -> T | None:
        """`call` in a worker thread; None for a key with no object if `missing_is_none`.
        Any other failure is 503."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await anyio.to_thread.run_sync(call)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if missing_is_none and code in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise ColdStoreUnavailable(f"conversation storage (S3) failed: {code or error}") from None
        except BotoCoreError as error:
            raise ColdStoreUnavailable(f"conversation storage (S3) is unreachable: {error}") from None


async def _in_thread(call: Callable[[], T]) -> T:
    """Blocking file IO in a worker thread; any OSError is 503 (the copy stays as it was)."""
    try:
        return await anyio.to_thread.run_sync(call)
    except OSError as error:
        raise ColdStoreUnavailable(
            f"conversation storage (files) failed: {error.strerror or error}") from None


@lru_cache(maxsize=4)
def _s3_store(bucket: str) -> S3ColdStore:
    return S3ColdStore(bucket)


@lru_cache(maxsize=4)
def _file_store(data_dir: str) -> FileColdStore:
    return FileColdStore(Path(data_dir) / "conversations")


def cold_store() -> ColdStore:
    """The process's cold store, as the settings (read again after
    `get_settings.cache_clear()`) choose it."""
    settings = get_settings()
    if settings.conversation_bucket:
        return _s3_store(settings.conversation_bucket)
    return _file_store(settings.data_dir)

"""Where synthesized audio waits to be fetched: a local folder, or S3 when `AUDIO_BUCKET` is set.

Both stores keep one contract (tests/speech/test_audio_store.py runs it on each). A file id can
be reserved before its audio exists, so a "delayed" TTS answer can hand out the URL at
once and the audio endpoint can say 202 until `fill` lands; the reservation keeps whose
speech it is (`owner`), for the job that fills it. Ids are server-made
(uuid hex) and checked against one pattern, so no `../` ever reaches a path or key.
Audio lives `AUDIO_TTL_S`; older files are treated as gone and deleted when met.

Streamed speech grows: the local store keeps a reserved file's audio in `{id}.growing`
(a WAV header whose data size is 0, then PCM appended as chunks arrive), which any
process sharing `AUDIO_DIR` can follow until `fill` lands the whole file (the
"complete" marker: the growing file is gone and the ready one is there) or `discard`
drops it. S3 cannot append to an object, so the S3 store does not grow: streamed
speech is stored there whole, once it is complete.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, runtime_checkable

from roleplay.core.errors import BadRequest, ServiceUnavailable
from roleplay.core.settings import get_settings
from roleplay.speech.audio_links import signed_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PENDING_S = 600  # a reservation nobody fills stops answering "pending" after this
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit
SWEEP_EVERY_S = 300.0
FOLLOW_POLL_S = 0.03  # how often a follower looks for more of a growing file
FOLLOW_STALL_S = 60.0  # a growing file that gains nothing for this long is given up on

AudioStatus = Literal["pending", "growing", "ready", "missing"]

# Stored media types and the file extensions the local store keeps them under.
EXTENSIONS = {
    "audio/wav": "wav",
    "audio/ogg": "ogg",
    "audio/aac": "aac",
    "audio/raw": "raw",
    "audio/mpeg": "mp3",
    "audio/webm": "webm",
    "audio/flac": "flac",
}
_MEDIA_TYPES = {extension: media_type for media_type, extension in EXTENSIONS.items()}


@dataclass(frozen=True)
class StoredAudio:
    file_id: str
    url: str
    media_type: str
    size: int
    expires_at: float  # epoch seconds


class AudioStore(Protocol):
    redirects: bool
    """Whether clients fetch the audio from `url()` elsewhere (S3) rather than from Server B."""

    async def put(self, data: bytes, media_type: str) -> StoredAudio: ...

    async def get(self, file_id: str) -> tuple[bytes, str] | None: ...

    async def url(self, file_id: str) -> str: ...

    async def reserve(self, owner: str = "") -> str:
        """A new file id whose audio is still to come; `owner`: whose it is, for `owner()`."""
        ...

    async def owner(self, file_id: str) -> str | None:
        """What `reserve` was told of a reservation still unfilled; None once it is gone."""
        ...

    async def fill(self, file_id: str, data: bytes, media_type: str) -> StoredAudio: ...

    async def status(self, file_id: str) -> AudioStatus: ...

    async def discard(self, file_id: str) -> None:
        """Drops a reservation whose audio will never come, so its URL answers 404."""
        ...


@runtime_checkable
class GrowingAudioStore(AudioStore, Protocol):
    """A store whose reserved files can be read while they are still being written."""

    async def grow(self, file_id: str, header: bytes) -> None:
        """Starts the reserved `file_id` as a growing WAV: `header` (data size 0) first."""
        ...

    async def append(self, file_id: str, data: bytes) -> None: ...

    async def follow(self, file_id: str) -> AsyncIterator[bytes] | None:
        """The growing file from its first byte, then each byte as it lands, until it is
        complete or dropped; None if it is not growing (any more)."""
        ...


def new_file_id() -> str:
    return uuid.uuid4().hex


def checked_file_id(file_id: str) -> str:
    if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
        raise BadRequest("not an audio file id this server hands out", code="invalid_file_id")
    return file_id


def checked_media_type(media_type: str) -> str:
    if media_type not in EXTENSIONS:
        raise BadRequest(f"audio of type {media_type!r} cannot be stored", code="invalid_media_type")
    return media_type


class LocalAudioStore:
    """Files in `AUDIO_DIR`: `{id}.{ext}` when ready, `{id}.pending` while reserved.

    The local runner serves them at `/api/audio/{id}`, through signed URLs
    (`audio_links`). Expired files go when met and in a sweep that runs at most every
    few minutes, on writes.
    """

    redirects = False

    def __init__(self, directory: str | Path, ttl_s: float, *,
                 now: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self._now = now
        self._last_sweep = 0.0

    async def put(self, data: bytes, media_type: str) -> StoredAudio:
        return await self.fill(new_file_id(), data, media_type)

    async def get(self, file_id: str) -> tuple[bytes, str] | None:
        checked_file_id(file_id)
        return await asyncio.to_thread(self._read, file_id)

    async def url(self, file_id: str) -> str:
        return await signed_url(checked_file_id(file_id))

    async def reserve(self, owner: str = "") -> str:
        file_id = new_file_id()
        await asyncio.to_thread(self._write, self.directory / f"{file_id}.pending", owner.encode())
        await self._maybe_sweep()
        return file_id

    async def owner(self, file_id: str) -> str | None:
        checked_file_id(file_id)
        return await asyncio.to_thread(self._pending_owner, file_id)

    def _pending_owner(self, file_id: str) -> str | None:
        try:
            return (self.directory / f"{file_id}.pending").read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    async def fill(self, file_id: str, data: bytes, media_type: str) -> StoredAudio:
        checked_file_id(file_id)
        path = self.directory / f"{file_id}.{EXTENSIONS[checked_media_type(media_type)]}"
        await asyncio.to_thread(self._write, path, data)
        await asyncio.to_thread(self._unlink_unready, file_id)
        await self._maybe_sweep()
        return StoredAudio(file_id, await self.url(file_id), media_type, len(data),
                           self._now() + self.ttl_s)

    async def status(self, file_id: str) -> AudioStatus:
        checked_file_id(file_id)
        return await asyncio.to_thread(self._status, file_id)

    async def discard(self, file_id: str) -> None:
        checked_file_id(file_id)
        await asyncio.to_thread(self._unlink_unready, file_id)

    async def grow(self, file_id: str, header: bytes) -> None:
        checked_file_id(file_id)
        await asyncio.to_thread(self._write, self._growing(file_id), header)

    async def append(self, file_id: str, data: bytes) -> None:
        checked_file_id(file_id)
        await asyncio.to_thread(self._append, self._growing(file_id), data)

    async def follow(self, file_id: str) -> AsyncIterator[bytes] | None:
        checked_file_id(file_id)
        try:
            handle = await asyncio.to_thread(self._growing(file_id).open, "rb")
        except FileNotFoundError:
            return None
        return self._follow(file_id, handle)

    async def _follow(self, file_id: str, handle: BinaryIO) -> AsyncIterator[bytes]:
        """Reads on through an open handle: the writer only appends, then unlinks the name
        after the last append, so once the name is gone one more read finds every byte."""
        growing = self._growing(file_id)
        idle_s = 0.0
        try:
            while True:
                data = await asyncio.to_thread(handle.read, 1 << 16)
                if data:
                    idle_s = 0.0
                    yield data
                    continue
                if not await asyncio.to_thread(growing.exists):
                    while data := await asyncio.to_thread(handle.read, 1 << 16):
                        yield data
                    return
                if idle_s >= FOLLOW_STALL_S:
                    return
                await asyncio.sleep(FOLLOW_POLL_S)
                idle_s += FOLLOW_POLL_S
        finally:
            handle.close()

    def _growing(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.growing"

    def _append(self, path: Path, data: bytes) -> None:
        with path.open("ab") as handle:
            handle.write(data)

    def _unlink_unready(self, file_id: str) -> None:
        self._growing(file_id).unlink(missing_ok=True)
        (self.directory / f"{file_id}.pending").unlink(missing_ok=True)

    async def sweep(self) -> int:
        """Deletes every expired file now; answers how many went."""
        self._last_sweep = self._now()
        return await asyncio.to_thread(self._sweep)

    async def _maybe_sweep(self) -> None:
        if self._now() - self._last_sweep >= min(SWEEP_EVERY_S, self.ttl_s):
            await self.sweep()

    def _write(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        partial.write_bytes(data)
        now = self._now()
        os.utime(partial, (now, now))  # age is measured on the store's own clock
        partial.replace(path)  # readers see the whole file or none

    def _expired(self, path: Path, ttl_s: float) -> bool:
        """Whether `path` outlived `ttl_s`, deleting it if so; a vanished file counts as expired."""
        try:
            expired = self._now() - path.stat().st_mtime >= ttl_s
        except FileNotFoundError:
            return True
        if expired:
            path.unlink(missing_ok=True)
        return expired

    def _ready_path(self, file_id: str) -> Path | None:
        for path in self.directory.glob(f"{file_id}.*"):
            if path.suffix[1:] in _MEDIA_TYPES and not self._expired(path, self.ttl_s):
                return path
        return None

    def _read(self, file_id: str) -> tuple[bytes, str] | None:
        path = self._ready_path(file_id)
        if path is None:
            return None
        try:
            return path.read_bytes(), _MEDIA_TYPES[path.suffix[1:]]
        except FileNotFoundError:
            return None

    def _status(self, file_id: str) -> AudioStatus:
        if self._ready_path(file_id) is not None:
            return "ready"
        if self._growing(file_id).exists() and not self._expired(self._growing(file_id),
                                                                 min(self.ttl_s, MAX_PENDING_S)):
            return "growing"
        pending = self.directory / f"{file_id}.pending"
        if pending.exists() and not self._expired(pending, min(self.ttl_s, MAX_PENDING_S)):
            return "pending"
        return "missing"

    def _sweep(self) -> int:
        if not self.directory.is_dir():
            return 0
        removed = 0
        for path in self.directory.iterdir():
            name = path.name
            if name.startswith("."):  # a write in progress, or one a crash left behind
                ttl = self.ttl_s
            elif name.endswith((".pending", ".growing")):
                ttl = min(self.ttl_s, MAX_PENDING_S)
            elif path.suffix[1:] in _MEDIA_TYPES:
                ttl = self.ttl_s
            else:
                continue
            if self._expired(path, ttl):
                removed += 1
        return removed


class S3AudioStore:
    """Objects `audio/{id}` in `AUDIO_BUCKET`, handed out as presigned GET URLs.

    A reservation is a small `audio/{id}.pending` marker. S3 keeps objects until deleted,
    so an expired one is deleted when met; a lifecycle rule on the `audio/` prefix should
    sweep the rest (S3 expires objects in whole days).
    """

    prefix = "audio/"
    redirects = True

    def __init__(self, bucket: str, ttl_s: float, *, now: Callable[[], float] = time.time) -> None:
        self.bucket = bucket
        self.ttl_s = ttl_s
        self._now = now
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    def _s3(self) -> S3Client:
        # Made on first use, not in __init__: moto's mock (and a Lambda's credentials)
        # must be in place before the client exists.
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client("s3", config=Config(signature_version="s3v4"))
            return self._client

    def _key(self, file_id: str) -> str:
        return f"{self.prefix}{checked_file_id(file_id)}"

    async def put(self, data: bytes, media_type: str) -> StoredAudio:
        return await self.fill(new_file_id(), data, media_type)

    async def get(self, file_id: str) -> tuple[bytes, str] | None:
        key = self._key(file_id)
        response = await self._call("get_object", Bucket=self.bucket, Key=key)
        if response is None:
            return None
        body = response["Body"]
        try:
            if self._expired(response["LastModified"].timestamp(), self.ttl_s):
                await self._call("delete_object", Bucket=self.bucket, Key=key)
                return None
            data = await asyncio.to_thread(body.read)
        finally:
            body.close()
        return data, str(response.get("ContentType") or "application/octet-stream")

    async def url(self, file_id: str) -> str:
        expires = int(min(max(self.ttl_s, 1), MAX_PRESIGN_S))
        key = self._key(file_id)
        return await asyncio.to_thread(
            self._s3().generate_presigned_url, "get_object",
            Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires)

    async def reserve(self, owner: str = "") -> str:
        file_id = new_file_id()
        await self._call("put_object", Bucket=self.bucket, Key=self._key(file_id) + ".pending",
                         Body=owner.encode())
        return file_id

    async def owner(self, file_id: str) -> str | None:
        response = await self._call("get_object", Bucket=self.bucket, Key=self._key(file_id) + ".pending")
        if response is None:
            return None
        body = response["Body"]
        try:
            data: bytes = await asyncio.to_thread(body.read)
        finally:
            body.close()
        return data.decode(errors="replace")

    async def fill(self, file_id: str, data: bytes, media_type: str) -> StoredAudio:
        key = self._key(file_id)
        await self._call("put_object", Bucket=self.bucket, Key=key, Body=data,
                         ContentType=checked_media_type(media_type))
        await self._call("delete_object", Bucket=self.bucket, Key=key + ".pending")
        return StoredAudio(file_id, await self.url(file_id), media_type, len(data),
                           self._now() + self.ttl_s)

    async def status(self, file_id: str) -> AudioStatus:
        key = self._key(file_id)
        ready = await self._call("head_object", Bucket=self.bucket, Key=key)
        if ready is not None:
            if not self._expired(ready["LastModified"].timestamp(), self.ttl_s):
                return "ready"
            await self._call("delete_object", Bucket=self.bucket, Key=key)
        pending = await self._call("head_object", Bucket=self.bucket, Key=key + ".pending")
        if pending is not None:
            if not self._expired(pending["LastModified"].timestamp(), min(self.ttl_s, MAX_PENDING_S)):
                return "pending"
            await self._call("delete_object", Bucket=self.bucket, Key=key + ".pending")
        return "missing"

    async def discard(self, file_id: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self._key(file_id) + ".pending")

    def _expired(self, modified: float, ttl_s: float) -> bool:
        return self._now() - modified >= ttl_s

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        """One S3 call in a worker thread; None for a missing key, 503 for anything else."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self._s3(), operation), **kwargs)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise ServiceUnavailable(f"audio storage (S3) failed: {code or error}",
                                     code="audio_store_unavailable") from None
        except BotoCoreError as error:
            raise ServiceUnavailable(f"audio storage (S3) is unreachable: {error}",
                                     code="audio_store_unavailable") from None


@lru_cache(maxsize=4)
def _s3_store(bucket: str, ttl_s: int) -> S3AudioStore:
    return S3AudioStore(bucket, ttl_s)


@lru_cache(maxsize=4)
def _local_store(directory: str, ttl_s: int) -> LocalAudioStore:
    return LocalAudioStore(directory, ttl_s)


def get_audio_store() -> AudioStore:
    settings = get_settings()
    if settings.audio_bucket:
        return _s3_store(settings.audio_bucket, settings.audio_ttl_s)
    return _local_store(settings.audio_dir, settings.audio_ttl_s)

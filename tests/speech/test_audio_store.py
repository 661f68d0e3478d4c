"""One contract, two audio stores: a local folder, and S3 (moto)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest

from roleplay.core.errors import BadRequest, ServiceUnavailable
from roleplay.speech.audio import PcmFormat, streaming_wav_header
from roleplay.speech.audio_store import (
    MAX_PENDING_S,
    SWEEP_EVERY_S,
    AudioStore,
    GrowingAudioStore,
    LocalAudioStore,
    S3AudioStore,
    get_audio_store,
)

TTL = 120
WAV = b"RIFF$\x00\x00\x00WAVEfmt " + bytes(28)
BAD_IDS = ["../etc/passwd", "..", "a/b", "", "x" * 65, "a b", "abc\n", "é", "a.pending", "*"]

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bucket(aws: None) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket="audio-test")
    return "audio-test"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[AudioStore]:
    if request.param == "local":
        yield LocalAudioStore(tmp_path / "audio", TTL, now=clock)
    else:
        yield S3AudioStore(request.getfixturevalue("bucket"), TTL, now=clock)


def _stored_names(store: AudioStore) -> list[str]:
    if isinstance(store, LocalAudioStore):
        return sorted(p.name for p in store.directory.iterdir()) if store.directory.exists() else []
    assert isinstance(store, S3AudioStore)
    listing = store._s3().list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def _url_path(url: str) -> str:
    return urlparse(url).path


def test_put_then_get(store: AudioStore) -> None:
    stored = run(store.put(WAV, "audio/wav"))
    assert len(stored.file_id) == 32 and stored.file_id.isalnum()
    assert (stored.media_type, stored.size) == ("audio/wav", len(WAV))
    assert stored.expires_at == pytest.approx(time.time() + TTL, abs=5)
    assert run(store.get(stored.file_id)) == (WAV, "audio/wav")
    assert run(store.status(stored.file_id)) == "ready"
    assert _url_path(stored.url) == _url_path(run(store.url(stored.file_id)))
    other = run(store.put(b"OggS...", "audio/ogg"))
    assert other.file_id != stored.file_id
    assert run(store.get(other.file_id)) == (b"OggS...", "audio/ogg")


def test_unknown_id_is_missing(store: AudioStore) -> None:
    assert run(store.get("0" * 32)) is None
    assert run(store.status("0" * 32)) == "missing"


def test_reserved_id_is_pending_until_filled(store: AudioStore) -> None:
    file_id = run(store.reserve())
    url = run(store.url(file_id))
    assert run(store.status(file_id)) == "pending"
    assert run(store.get(file_id)) is None
    stored = run(store.fill(file_id, WAV, "audio/wav"))
    assert stored.file_id == file_id
    assert _url_path(stored.url) == _url_path(url), "the URL handed out early stays valid"
    assert run(store.status(file_id)) == "ready"
    assert run(store.get(file_id)) == (WAV, "audio/wav")
    assert not any(name.endswith(".pending") for name in _stored_names(store))


def test_a_reservation_keeps_whose_it_is_until_filled(store: AudioStore) -> None:
    file_id = run(store.reserve('{"id": "alice"}'))
    assert run(store.owner(file_id)) == '{"id": "alice"}'
    run(store.fill(file_id, WAV, "audio/wav"))
    assert run(store.owner(file_id)) is None
    assert run(store.owner(run(store.reserve()))) == ""


def test_a_discarded_reservation_is_missing(store: AudioStore) -> None:
    file_id = run(store.reserve())
    run(store.discard(file_id))
    assert run(store.status(file_id)) == "missing"


def test_audio_expires_and_is_deleted(store: AudioStore, clock: Clock) -> None:
    stored = run(store.put(WAV, "audio/wav"))
    clock.offset = TTL - 5
    assert run(store.get(stored.file_id)) == (WAV, "audio/wav")
    clock.offset = TTL + 2
    assert run(store.status(stored.file_id)) == "missing"
    assert run(store.get(stored.file_id)) is None
    assert _stored_names(store) == []


def test_an_unfilled_reservation_expires(store: AudioStore, clock: Clock) -> None:
    file_id = run(store.reserve())
    clock.offset = min(TTL, MAX_PENDING_S) + 2
    assert run(store.status(file_id)) == "missing"
    assert _stored_names(store) == []


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_bad_ids_are_refused(store: AudioStore, bad_id: str) -> None:
    for call in (store.get(bad_id), store.status(bad_id), store.url(bad_id),
                 store.fill(bad_id, WAV, "audio/wav")):
        with pytest.raises(BadRequest) as caught:
            run(call)
        assert caught.value.error_code == "invalid_file_id"
    assert _stored_names(store) == []


def test_unknown_media_type_is_refused(store: AudioStore) -> None:
    with pytest.raises(BadRequest):
        run(store.put(WAV, "text/html"))


def test_local_files_stay_in_their_folder(tmp_path: Path, clock: Clock) -> None:
    store = LocalAudioStore(tmp_path / "audio", TTL, now=clock)
    stored = run(store.put(WAV, "audio/wav"))
    assert _url_path(stored.url) == f"/api/audio/{stored.file_id}"
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == [
        "audio", f"audio/{stored.file_id}.wav"]


def test_local_sweep_removes_expired_files(tmp_path: Path, clock: Clock) -> None:
    store = LocalAudioStore(tmp_path / "audio", 1000, now=clock)
    old = [run(store.put(WAV, "audio/wav")).file_id for _ in range(3)]
    run(store.reserve())
    (store.directory / ".left-by-a-crash.part").write_bytes(b"x")
    (store.directory / "notes.txt").write_bytes(b"not ours")
    clock.offset = 1001
    assert run(store.sweep()) == 5
    assert sorted(p.name for p in store.directory.iterdir()) == ["notes.txt"]
    assert all(run(store.status(file_id)) == "missing" for file_id in old)


def test_local_sweep_runs_by_itself_now_and_then(tmp_path: Path, clock: Clock) -> None:
    store = LocalAudioStore(tmp_path / "audio", 1000, now=clock)
    first = run(store.put(WAV, "audio/wav"))  # sweeps (the first time) and records when
    clock.offset = 1001
    second = run(store.put(WAV, "audio/wav"))  # a sweep is due again: the first file goes
    names = sorted(p.name for p in store.directory.iterdir())
    assert names == [f"{second.file_id}.wav"]
    assert SWEEP_EVERY_S < 1001
    assert run(store.status(first.file_id)) == "missing"


def test_s3_urls_are_presigned_gets_that_expire_with_the_audio(bucket: str) -> None:
    store = S3AudioStore(bucket, TTL)
    stored = run(store.put(WAV, "audio/wav"))
    url = urlparse(stored.url)
    query = parse_qs(url.query)
    assert stored.file_id in url.path and "audio/" in url.path
    assert bucket in url.netloc + url.path
    assert query["X-Amz-Expires"] == [str(TTL)]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]


def test_s3_failure_is_503(aws: None) -> None:
    store = S3AudioStore("no-such-bucket", TTL)
    with pytest.raises(ServiceUnavailable) as caught:
        run(store.put(WAV, "audio/wav"))
    assert caught.value.error_code == "audio_store_unavailable"


def test_get_audio_store_follows_settings(settings_env: Callable[..., None], tmp_path: Path,
                                          bucket: str) -> None:
    settings_env(AUDIO_DIR=str(tmp_path / "here"), AUDIO_TTL_S="300")
    local = get_audio_store()
    assert isinstance(local, LocalAudioStore)
    assert (local.directory, local.ttl_s) == (tmp_path / "here", 300)
    settings_env(AUDIO_BUCKET=bucket)
    s3 = get_audio_store()
    assert isinstance(s3, S3AudioStore) and s3.bucket == bucket
    stored = run(s3.put(WAV, "audio/wav"))
    assert run(s3.get(stored.file_id)) == (WAV, "audio/wav")
    settings_env(AUDIO_BUCKET="  ")
    assert isinstance(get_audio_store(), LocalAudioStore)


HEADER = streaming_wav_header(PcmFormat(32000))


def _follow_in_a_process(directory: str, file_id: str) -> tuple[bytes, str]:
    """Another instance on the same AUDIO_DIR: what it reads, and the status at its first bytes."""

    async def follow() -> tuple[bytes, str]:
        store = LocalAudioStore(directory, TTL)
        for _ in range(3000):  # until the writer starts the file
            if (stream := await store.follow(file_id)) is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the file never started growing")
        (Path(directory) / "reader.ready").touch()
        body, status_at_first = b"", ""
        async for data in stream:
            if not body:
                status_at_first = await store.status(file_id)
            body += data
        return body, status_at_first

    return asyncio.run(follow())


def test_a_growing_local_file_is_followed_by_another_process_until_filled(tmp_path: Path) -> None:
    import multiprocessing

    store = LocalAudioStore(tmp_path / "audio", TTL)
    file_id = run(store.reserve())
    chunks = [bytes([n]) * 3200 for n in range(1, 6)]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        run(store.grow(file_id, HEADER))
        assert run(store.status(file_id)) == "growing"
        reader = pool.apply_async(_follow_in_a_process, (str(store.directory), file_id))
        deadline = time.monotonic() + 60
        while not (store.directory / "reader.ready").exists():
            assert time.monotonic() < deadline, "the reading process never started"
            time.sleep(0.05)
        for chunk in chunks:
            run(store.append(file_id, chunk))
            time.sleep(0.1)
        whole = HEADER + b"".join(chunks)
        run(store.fill(file_id, whole, "audio/wav"))
        body, status_at_first = reader.get(timeout=60)
    assert body == whole
    assert status_at_first == "growing", "the reader had bytes while the file was still growing"
    assert run(store.status(file_id)) == "ready"
    assert _stored_names(store) == [f"{file_id}.wav", "reader.ready"]


def test_a_discarded_growing_file_ends_its_followers_and_is_missing(tmp_path: Path) -> None:
    store = LocalAudioStore(tmp_path / "audio", TTL)

    async def scenario() -> bytes:
        file_id = await store.reserve()
        await store.grow(file_id, HEADER)
        stream = await store.follow(file_id)
        assert stream is not None
        await store.append(file_id, b"\x01\x02")
        await store.discard(file_id)
        assert await store.status(file_id) == "missing"
        assert await store.follow(file_id) is None
        return b"".join([data async for data in stream])

    assert run(scenario()) == HEADER + b"\x01\x02"
    assert _stored_names(store) == []


def test_only_the_local_store_grows(tmp_path: Path, bucket: str) -> None:
    assert isinstance(LocalAudioStore(tmp_path, TTL), GrowingAudioStore)
    assert not isinstance(S3AudioStore(bucket, TTL), GrowingAudioStore)


def test_local_sweep_removes_an_abandoned_growing_file(tmp_path: Path, clock: Clock) -> None:
    store = LocalAudioStore(tmp_path / "audio", TTL, now=clock)
    file_id = run(store.reserve())
    run(store.grow(file_id, HEADER))
    clock.offset += MAX_PENDING_S + 1
    assert run(store.sweep()) == 2
    assert run(store.status(file_id)) == "missing"

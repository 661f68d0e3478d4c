"""One contract, two cold stores: files under DATA_DIR/conversations, and S3 (moto)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from roleplay.core.settings import get_settings
from roleplay.sessions import cold_store as cold_store_module
from roleplay.sessions.cold_store import (
    ColdStore,
    ColdStoreUnavailable,
    FileColdStore,
    S3ColdStore,
    cold_store,
)
from roleplay.sessions.scope import storage_id

T = TypeVar("T")

KEY = storage_id("alice", "first-conversation")
OTHER = storage_id("bob", "first-conversation")
BAD_KEYS = ["", "../etc/passwd", KEY + "/..", KEY.upper(), KEY[:-1], KEY + "0", "s" + "g" * 40,
            "x" + KEY[1:], f"{KEY}\n", f"../{KEY}", "conversations/" + KEY, "s-1"]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _bucket(name: str) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["files", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ColdStore:
    if request.param == "files":
        return FileColdStore(tmp_path / "conversations")
    request.getfixturevalue("aws")
    return S3ColdStore(_bucket("conversations-test"))


def _stored_names(store: ColdStore) -> list[str]:
    """Every name the backend holds: files (dot-named ones too) or object keys."""
    if isinstance(store, FileColdStore):
        if not store.directory.exists():
            return []
        return sorted(str(p.relative_to(store.directory)) for p in store.directory.rglob("*")
                      if p.is_file())
    assert isinstance(store, S3ColdStore)
    listing = store._s3().list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.parametrize("data", [b"\x1f\x8b gzip-ish", b"", bytes(range(256)) * 4096],
                         ids=["small", "empty", "1MiB"])
def test_a_stored_copy_reads_back_byte_for_byte(store: ColdStore, data: bytes) -> None:
    run(store.put(KEY, data))
    assert run(store.get(KEY)) == data


def test_a_key_never_stored_reads_as_none(store: ColdStore) -> None:
    assert run(store.get(KEY)) is None


def test_a_second_put_replaces_the_copy_whole(store: ColdStore) -> None:
    run(store.put(KEY, b"a much longer first version of the conversation"))
    run(store.put(KEY, b"short"))
    assert run(store.get(KEY)) == b"short"


def test_copies_under_different_keys_stay_apart(store: ColdStore) -> None:
    run(store.put(KEY, b"alice's"))
    run(store.put(OTHER, b"bob's"))
    run(store.delete(OTHER))
    assert run(store.get(KEY)) == b"alice's"
    assert run(store.get(OTHER)) is None


def test_a_deleted_copy_is_gone_and_deleting_it_again_is_fine(store: ColdStore) -> None:
    run(store.put(KEY, b"data"))
    run(store.delete(KEY))
    assert run(store.get(KEY)) is None
    run(store.delete(KEY))
    run(store.delete(OTHER))  # never stored at all
    assert run(store.get(KEY)) is None


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_other_than_storage_ids_are_refused_before_reaching_the_backend(
        store: ColdStore, key: str) -> None:
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.delete(key)):
        with pytest.raises(ValueError, match="storage id"):
            run(call())
    assert _stored_names(store) == []


def test_files_fan_out_into_folders_named_by_two_characters_of_the_key(tmp_path: Path) -> None:
    store = FileColdStore(tmp_path / "conversations")
    run(store.put(KEY, b"data"))
    assert _stored_names(store) == [f"{KEY[1:3]}/{KEY}"]


def test_s3_copies_live_under_the_conversations_prefix(aws: None) -> None:
    store = S3ColdStore(_bucket("prefix-test"))
    run(store.put(KEY, b"data"))
    assert _stored_names(store) == [f"conversations/{KEY}"]


def test_a_file_write_that_fails_midway_leaves_the_previous_copy_and_no_stray_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileColdStore(tmp_path / "conversations")
    run(store.put(KEY, b"previous"))
    written: list[bytes] = []

    def disk_full(fd: int) -> None:  # the new bytes are in the temporary file by now
        written.append(Path(f"/proc/self/fd/{fd}").read_bytes())
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched, pytest.raises(ColdStoreUnavailable) as raised:
        patched.setattr(os, "fsync", disk_full)
        run(store.put(KEY, b"the next version, never finished"))
    assert written == [b"the next version, never finished"]
    assert raised.value.status_code == 503 and raised.value.error_code == "cold_store_unavailable"
    assert run(store.get(KEY)) == b"previous"
    assert _stored_names(store) == [f"{KEY[1:3]}/{KEY}"]


def test_a_crashed_writes_leftover_is_never_read_as_a_copy(tmp_path: Path) -> None:
    store = FileColdStore(tmp_path / "conversations")
    folder = store.path(KEY).parent
    folder.mkdir(parents=True)
    (folder / f".{KEY}.0badc0de.part").write_bytes(b"torn")
    assert run(store.get(KEY)) is None
    run(store.put(KEY, b"whole"))
    assert run(store.get(KEY)) == b"whole"


@pytest.fixture(params=["files", "s3"])
def broken_store(request: pytest.FixtureRequest, tmp_path: Path) -> ColdStore:
    """A store whose backend cannot be used: DATA_DIR is a regular file, or the bucket
    does not exist."""
    if request.param == "files":
        (tmp_path / "data").write_text("not a folder")
        return FileColdStore(tmp_path / "data" / "conversations")
    request.getfixturevalue("aws")
    return S3ColdStore("no-such-conversation-bucket")


@pytest.mark.parametrize("operation", ["put", "get", "delete"])
def test_a_backend_that_cannot_be_used_is_cold_store_unavailable(
        broken_store: ColdStore, operation: str) -> None:
    calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
        "put": lambda: broken_store.put(KEY, b"data"), "get": lambda: broken_store.get(KEY),
        "delete": lambda: broken_store.delete(KEY)}
    with pytest.raises(ColdStoreUnavailable) as raised:
        run(calls[operation]())
    assert raised.value.status_code == 503 and raised.value.error_code == "cold_store_unavailable"
    assert "/" not in raised.value.message, "no path or object key reaches the client"


@pytest.fixture
def fresh_stores() -> Iterator[None]:
    cold_store_module._file_store.cache_clear()
    cold_store_module._s3_store.cache_clear()
    yield
    cold_store_module._file_store.cache_clear()
    cold_store_module._s3_store.cache_clear()


def test_the_settings_choose_files_under_data_dir_unless_a_bucket_is_set(
        settings_env: Callable[..., None], tmp_path: Path, fresh_stores: None) -> None:
    settings_env(DATA_DIR=str(tmp_path / "state"), CONVERSATION_BUCKET="")
    files = cold_store()
    assert isinstance(files, FileColdStore)
    assert files.directory == tmp_path / "state" / "conversations"
    assert cold_store() is files, "one store per process"
    settings_env(CONVERSATION_BUCKET="my-conversations")
    s3 = cold_store()
    assert isinstance(s3, S3ColdStore) and s3.bucket == "my-conversations"
    assert get_settings().conversation_bucket == "my-conversations"


def test_importing_the_cold_store_leaves_boto3_unloaded() -> None:
    code = ("import sys, roleplay.sessions.cold_store; "
            "assert 'boto3' not in sys.modules, 'boto3 imported eagerly'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["layers/roleplay/python", "."])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=str(Path(__file__).resolve().parents[2]))

"""The content-addressed blob store: atomic, durable names; refusals; no stray files."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from bridge.errors import StorageUnavailable
from bridge.store import blobs as blobs_module
from bridge.store.blobs import FileBlobStore

DATA = b"From: anna@borger.dp2.test\r\nSubject: x\r\n\r\n" + b"body line\r\n" * 5000


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def test_put_is_content_addressed(blobs: FileBlobStore) -> None:
    sha = blobs.put(DATA)
    assert sha == hashlib.sha256(DATA).hexdigest()
    assert blobs.get(sha) == DATA
    assert blobs.exists(sha)
    assert blobs.path(sha) == blobs.root / sha[:2] / sha


def test_put_is_idempotent(blobs: FileBlobStore) -> None:
    sha = blobs.put(DATA)
    mtime = blobs.path(sha).stat().st_mtime_ns
    assert blobs.put(DATA) == sha
    assert all_files(blobs.root) == [blobs.path(sha)]
    assert blobs.path(sha).stat().st_mtime_ns == mtime


def test_blob_is_readable_by_its_owner_only(blobs: FileBlobStore) -> None:
    sha = blobs.put(DATA)
    assert stat.S_IMODE(blobs.path(sha).stat().st_mode) == 0o600


def test_no_temporary_files_are_left_after_success(blobs: FileBlobStore) -> None:
    shas = {blobs.put(DATA + bytes([i])) for i in range(5)} | {blobs.put(b"")}
    assert all_files(blobs.root) == sorted(blobs.path(s) for s in shas)
    assert not [p for p in blobs.root.rglob("*") if p.name.endswith(".tmp")]


def test_failed_write_leaves_no_blob_and_raises_storage_unavailable(
        blobs: FileBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:1000]))        # part of the message reaches the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(blobs_module.os, "write", disk_full)
    with pytest.raises(StorageUnavailable) as exc:
        blobs.put(DATA)
    monkeypatch.undo()
    assert len(calls) == 2
    sha = hashlib.sha256(DATA).hexdigest()
    assert not blobs.exists(sha)
    assert all_files(blobs.root) == []
    assert exc.value.temporary
    assert "try again later" in exc.value.public
    assert blobs.put(DATA) == sha and blobs.get(sha) == DATA      # the next attempt works


def test_failed_fsync_leaves_no_blob(blobs: FileBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync, failed = os.fsync, []

    def io_error(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return real_fsync(fd)                   # directories sync; the file's data does not
        failed.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(blobs_module.os, "fsync", io_error)
    with pytest.raises(StorageUnavailable):
        blobs.put(DATA)
    monkeypatch.undo()
    assert failed
    assert all_files(blobs.root) == []


def test_get_of_a_missing_blob_raises_key_error(blobs: FileBlobStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(KeyError):
        blobs.get(sha)
    assert not blobs.exists(sha)


@pytest.mark.parametrize("name", [
    "../x", "../../etc/passwd", "/etc/passwd", "", "a" * 63, "a" * 65,
    "A" * 64, "g" * 64, "../" + "a" * 61, "aa/" + "b" * 61, "a" * 63 + "\x00",
])
def test_invalid_blob_names_are_refused(blobs: FileBlobStore, tmp_path: Path, name: str) -> None:
    (tmp_path / "x").write_bytes(b"outside the blob store")
    with pytest.raises(KeyError):
        blobs.get(name)
    with pytest.raises(KeyError):
        blobs.exists(name)
    with pytest.raises(KeyError):
        blobs.path(name)

"""Content-addressed message blobs on disk (DESIGN.md section 4.2).

Layout: <root>/<sha[0:2]>/<sha>; the 256 directories are made (and their
entries fsynced) when the store opens, so a put never creates a directory.  A blob is written to a temporary
file in the same directory, fsynced, renamed into place, and the directory is
fsynced, so a name that exists always holds complete bytes: after a crash
there are at most stray `*.tmp` files, never a torn blob.  Identical content
is stored once.  `BlobStore` is the interface; an object store can implement it
later (DESIGN.md section 11).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Protocol

from bridge.errors import StorageUnavailable
from bridge.files import fsync_directory

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store `data` durably; return its SHA-256 (hex).  Raises StorageUnavailable."""
        ...

    def get(self, sha256: str) -> bytes:
        """The bytes stored under `sha256`.  Raises KeyError when there are none."""
        ...

    def exists(self, sha256: str) -> bool:
        ...


class FileBlobStore:
    """See `BlobStore`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._make_directories()

    def _make_directories(self) -> None:
        made = False
        for prefix in range(256):
            d = self.root / f"{prefix:02x}"
            if not d.is_dir():
                d.mkdir(exist_ok=True)
                made = True
        if made:
            fsync_directory(self.root)

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise KeyError(sha256)
        return self.root / sha256[0:2] / sha256

    def put(self, data: bytes) -> str:
        # Plain strings for the paths: a put runs for every accepted message, every copy and
        # every receipt, and pathlib's objects cost more than the system calls' Python side.
        sha = hashlib.sha256(data).hexdigest()
        directory = os.path.join(self._root, sha[0:2])
        final = os.path.join(directory, sha)
        try:
            if os.path.exists(final):
                fsync_directory(directory)      # another put may have just renamed it, not yet fsynced
                return sha
            self._write(directory, final, data)
        except OSError as exc:
            raise StorageUnavailable(f"writing blob {sha}: {exc}") from exc
        return sha

    def _write(self, directory: str, final: str, data: bytes) -> None:
        tmp = f"{final[:-64]}.{final[-64:]}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        os.close(fd)
        os.replace(tmp, final)
        fsync_directory(directory)

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

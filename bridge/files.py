"""Durable file writes, shared by the blob store, the certificates, the OpenPGP keyring and
the drop folders: a file is written under a temporary name, fsynced, renamed into place, and
its directory fsynced, so after a crash it is either the old file or the whole new one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, replace: bool = True) -> None:
    """Write `data` to `path` via temp file + fsync + rename, then fsync the directory.

    The temp file is created with `mode` (O_EXCL, so never an existing file; the umask
    applies), so a key is 0600 from its first byte.  With `replace=False` the final step is
    a hard link, which fails with FileExistsError instead of replacing.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def fsync_directory(directory: Path | str) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

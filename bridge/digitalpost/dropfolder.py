"""MeMo drop folders: a tenant's own systems submit MeMo files by writing them into a folder.

Owns the folder protocol (the result files' XML is `dropresults.py`); the submission itself is
`BridgeService.submit_memo`, made as the tenant's system account.  Layout, per tenant, under
the configured base directory (`[dropfolder] base_dir`, default `<home>/dropfolders/`):

    <tenant>/incoming/    NAME.xml, written by the system (best as .NAME.tmp or NAME.xml.part,
                          then renamed; names starting with "." or not ending in ".xml" are
                          ignored; NAME may hold any other character, spaces, UTF-8 and
                          newlines included)
    <tenant>/processing/  files the bridge has claimed (moved here with os.rename)
    <tenant>/processed/   NAME.receipt.xml or NAME.error.xml, then NAME.xml, the original

Exactly once across crashes:
- A file is claimed by opening it, taking an exclusive flock on it and renaming it into
  processing/; the lock is held until the file is in processed/.  Another process (or a
  second scan) skips a locked file, and only one rename of incoming/NAME.xml can succeed.
- A file in processing/ that nobody holds locked was left by a crash (or by a temporary
  failure) and is submitted again.  That is safe because submit_memo deduplicates by the
  MeMo's messageUUID for the same account: a crash after the commit gives the same UUID,
  marked duplicate, and the receipt is written then.
- The result file (temp name, fsync, rename, fsync of the directory) is written before the
  original is moved; it records the SHA-256 of the file, so a crash between the two is
  finished by moving the original, without a second submission or a second result file.
- A name already used in processing/ or processed/ gets a suffix (NAME-1.xml, ...): nothing
  is overwritten.  A file that cannot be read, is too large or is not a valid MeMo gets an
  error file; a temporary failure (the database is down) leaves it in processing/ for a
  later scan.  Known limit: flock is not reliable on network file systems, and two nodes
  sharing one folder may, in a window of microseconds, pick the same free name.

What is never read, only logged once and left where it is (no result file, since the bridge
cannot tell whose it is): a symbolic link (opened with O_NOFOLLOW, so never followed, wherever
it points), a FIFO, device or directory (opened with O_NONBLOCK, so a FIFO cannot stall the
scan), and a file with more than one hard link.  A file larger than the SMTP size limit gets an
error file; at most limit + 1 bytes of it are read.

A file still being written: a writer that renames a finished temporary file, or holds an
exclusive flock on NAME.xml while writing it, is safe (a locked file is skipped until the lock
is released).  A writer that does neither may have its file claimed half-written; that file
gets an error file (a MeMo cut short is not well-formed XML: its end tag comes last), never a
partial message.

Imports no protocol or storage library; blocking work runs through `run_blocking`.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from bridge.clock import Clock
from bridge.core.service import Accepted, SessionInfo
from bridge.digitalpost.dropresults import (NS, error_xml, receipt_xml, result_base, result_name,
                                            xml_stem)
from bridge.errors import BridgeError
from bridge.files import fsync_directory, write_atomic
from bridge.logs import session_id

log = logging.getLogger("bridge.dropfolder")

RESULT_SUFFIXES = (".receipt.xml", ".error.xml")
# An unexpected error (a bug) is retried this often before the file gets an error file.
MAX_UNEXPECTED = 5
RETRY_DELAY_MAX = 60.0
# Files of one tenant processed at once (each waits mostly on fsync and the database commit).
CONCURRENCY = 4

UNREADABLE = "the file could not be read (filen kunne ikke læses)"
TOO_LARGE = "the file is larger than the bridge accepts (filen er større, end broen modtager)"
INTERNAL = "internal error (intern fejl)"


class _Retry(Exception):
    """A temporary failure: the file stays in processing/ and is tried again later."""


@dataclass(frozen=True)
class Folder:
    """One tenant's drop folder."""

    tenant: str
    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def processed(self) -> Path:
        return self.root / "processed"


class DropFolders:
    """Scans every tenant's incoming/ and processing/ and submits what it finds."""

    def __init__(self, service: Any, base_dir: Path, tenants: Callable[[], list[str]],
                 run_blocking: Callable[..., Awaitable[Any]], clock: Clock,
                 poll_interval: float = 1.0) -> None:
        self.service, self.base_dir, self.tenants = service, Path(base_dir), tenants
        self.run_blocking, self.clock, self.poll_interval = run_blocking, clock, poll_interval
        self._failures: dict[Path, tuple[int, float]] = {}   # processing path -> (count, retry at)
        self._missing_account: set[str] = set()              # tenants already warned about
        self._locks: dict[str, threading.Lock] = {}          # per tenant: naming in processed/
        self._skipped: set[Path] = set()                     # names already warned about

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("watching MeMo drop folders under %s", self.base_dir)
        while not stopping.is_set():
            try:
                await self.scan(stopping)
            except Exception:                                # logged; the next scan tries again
                log.exception("drop folder scan failed")
            try:
                await asyncio.wait_for(stopping.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def scan(self, stopping: asyncio.Event) -> None:
        """One pass over every tenant's folder."""
        for tenant in await self.run_blocking(self.tenants):
            if stopping.is_set():
                return
            folder = await self.run_blocking(self._folder, tenant)
            if folder is not None:
                await self._scan_folder(folder, stopping)

    async def _scan_folder(self, folder: Folder, stopping: asyncio.Event) -> None:
        """Orphans in processing/ first, then incoming/, up to CONCURRENCY files at once."""
        candidates = await self.run_blocking(self._candidates, folder)
        if not candidates:
            return
        principal = await self.run_blocking(self._principal, folder.tenant)
        if principal is None:
            return
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(where: Path, name: str) -> None:
            async with slots:
                if not stopping.is_set():
                    await self.run_blocking(self._process, folder, principal, where, name)
        outcomes = await asyncio.gather(*(one(w, n) for w, n in candidates), return_exceptions=True)
        for (where, name), outcome in zip(candidates, outcomes):
            if isinstance(outcome, Exception):         # e.g. disk full: the file stays, tried again
                log.error("%s/%s of tenant %s: %r", where.name, _shown(name), folder.tenant, outcome,
                          exc_info=outcome)

    # --- finding work -----------------------------------------------------------------

    def _folder(self, tenant: str) -> Folder | None:
        if not tenant or tenant.startswith(".") or "/" in tenant or "\\" in tenant:
            log.warning("tenant name %r cannot be a folder name; no drop folder for it", tenant)
            return None
        folder = Folder(tenant, self.base_dir / tenant)
        for path in (folder.incoming, folder.processing, folder.processed):
            path.mkdir(parents=True, exist_ok=True)
        return folder

    def _candidates(self, folder: Folder) -> list[tuple[Path, str]]:
        now = time.monotonic()
        orphans = [(folder.processing, n) for n in sorted(os.listdir(folder.processing))
                   if _is_input(n) and self._failures.get(folder.processing / n, (0, 0.0))[1] <= now]
        return orphans + [(folder.incoming, n) for n in sorted(os.listdir(folder.incoming)) if _is_input(n)]

    def _principal(self, tenant: str) -> Any:
        """The tenant's system account, or None (files wait in incoming/ until it exists)."""
        try:
            principal = self.service.system_principal(tenant)
        except BridgeError as exc:
            if tenant not in self._missing_account:
                self._missing_account.add(tenant)
                log.warning("drop folder of tenant %s waits: %s (add one with "
                            "`dp2bridge account add LOGIN --system`)", tenant, exc.public)
            return None
        self._missing_account.discard(tenant)
        return principal

    # --- one file ---------------------------------------------------------------------

    def _process(self, folder: Folder, principal: Any, where: Path, name: str) -> None:
        token = session_id.set(secrets.token_hex(6))
        try:
            claimed = self._claim(folder, where, name)
            if claimed is None:
                return
            fd, path = claimed
            try:
                self._handle(folder, principal, fd, path)
            finally:
                if fd >= 0:
                    os.close(fd)
        finally:
            session_id.reset(token)

    def _claim(self, folder: Folder, where: Path, name: str) -> tuple[int, Path] | None:
        """(locked fd, path in processing/), or None when the file is gone or someone has it.

        A regular file the bridge may not open is claimed without a lock (fd -1), so that it
        gets an error file instead of waiting in incoming/ for ever."""
        src = where / name
        try:
            # O_NOFOLLOW: a symlink is never followed (ELOOP); O_NONBLOCK: a FIFO opens at once.
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            return self._claim_unreadable(folder, where, name)
        except OSError as exc:                              # gone, or a symlink
            if exc.errno == errno.ELOOP:
                self._skip(folder, src, "is a symbolic link")
            return None
        try:
            if self._unfit(folder, src, os.fstat(fd)):
                raise FileNotFoundError(src)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a writer holding a lock: not yet
            st, now = os.fstat(fd), os.stat(src, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise FileNotFoundError(src)
            return fd, self._move_to_processing(folder, where, name)
        except OSError:                                     # locked by another, or moved meanwhile
            os.close(fd)
            return None

    def _claim_unreadable(self, folder: Folder, where: Path, name: str) -> tuple[int, Path] | None:
        try:
            if self._unfit(folder, where / name, os.stat(where / name, follow_symlinks=False)):
                return None
            return -1, self._move_to_processing(folder, where, name)
        except OSError:
            return None

    def _unfit(self, folder: Folder, src: Path, st: os.stat_result) -> bool:
        """Whether `src` is left alone: not a regular file (FIFO, device, directory), or a
        file with other hard links (it could be someone else's file, linked in)."""
        if not stat.S_ISREG(st.st_mode):
            self._skip(folder, src, "is not a regular file")
        elif st.st_nlink != 1:
            self._skip(folder, src, f"has {st.st_nlink} hard links")
        else:
            return False
        return True

    def _skip(self, folder: Folder, src: Path, why: str) -> None:
        """Logs, once per name, that `src` is left where it is and never read."""
        if src not in self._skipped:
            if len(self._skipped) > 10_000:
                self._skipped.clear()
            self._skipped.add(src)
            log.warning("%s/%s of tenant %s %s; left alone (not read, no result file)",
                        src.parent.name, _shown(src.name), folder.tenant, why)

    def _move_to_processing(self, folder: Folder, where: Path, name: str) -> Path:
        if where == folder.processing:
            return where / name
        dst = folder.processing / _free_name(folder.processing, name)
        os.rename(where / name, dst)
        fsync_directory(folder.processing)
        log.debug("claimed %s of tenant %s as processing/%s", _shown(name), folder.tenant,
                  _shown(dst.name))
        return dst

    def _handle(self, folder: Folder, principal: Any, fd: int, path: Path) -> None:
        data: bytes | None = None
        digest, problem = "", UNREADABLE
        if fd >= 0:
            try:
                data, digest = _read(fd, self.service.settings.max_message_size)
                problem = None if data is not None else TOO_LARGE
            except OSError:
                pass
        if not self._finish(folder, path, digest, None):
            try:
                result = self._outcome(folder, principal, path, data or b"", digest, problem,
                                       session_id.get())
            except _Retry:
                return
            self._finish(folder, path, digest, result)
        self._failures.pop(path, None)

    def _finish(self, folder: Folder, path: Path, digest: str, result: tuple[str, bytes] | None) -> bool:
        """Writes `result` ("receipt"|"error", XML) as processed/BASE.KIND.xml, then moves the
        original to processed/BASE.xml.  When a result was already written for this file (a
        crash came between the two) only the move is done.  False: `result` is None and there
        was no such result.  The lock keeps this process's threads from choosing one BASE."""
        with self._locks.setdefault(folder.tenant, threading.Lock()):
            base, written = result_base(folder.processed, path.name, digest)
            if written:
                log.info("%s of tenant %s already has processed/%s; moving the original there",
                         _shown(path.name), folder.tenant, result_name(written, base))
            elif result is None:
                return False
            else:
                write_atomic(folder.processed / result_name(result[0], base), result[1], 0o666)
            os.rename(path, folder.processed / f"{base}.xml")
        fsync_directory(folder.processed)
        fsync_directory(folder.processing)
        return True

    def _outcome(self, folder: Folder, principal: Any, path: Path, data: bytes, digest: str,
                 problem: str | None, sid: str) -> tuple[str, bytes]:
        """("receipt"|"error", the file's XML); raises _Retry for a temporary failure.
        `problem`: UNREADABLE or TOO_LARGE when the file was not read (an error file)."""
        fields = {"file": path.name, "sha256": digest, "tenant": folder.tenant, "session": sid}
        if problem is not None:
            log.warning("%s of tenant %s: %s", _shown(path.name), folder.tenant, problem)
            return "error", error_xml(fields, self.clock.now(), problem)
        ctx = SessionInfo(sid, "dropfolder", "local", True)
        try:
            accepted: Accepted = self.service.submit_memo(principal, data, ctx)
        except BridgeError as exc:
            if exc.temporary:
                self._failed(path)
                log.warning("%s of tenant %s: temporary failure, tried again later: %s",
                            _shown(path.name), folder.tenant, exc)
                raise _Retry() from None
            log.info("%s of tenant %s refused: %s", _shown(path.name), folder.tenant, exc)
            return "error", error_xml(fields, self.clock.now(), exc.public, exc)
        except Exception:
            count = self._failed(path)
            log.exception("%s of tenant %s: unexpected error (attempt %d of %d)", _shown(path.name),
                          folder.tenant, count, MAX_UNEXPECTED)
            if count < MAX_UNEXPECTED:
                raise _Retry() from None
            return "error", error_xml(fields, self.clock.now(), f"{INTERNAL} (ref {sid})")
        status = "duplicate" if accepted.duplicate else "accepted"
        log.info("%s of tenant %s %s as %s", _shown(path.name), folder.tenant, status, accepted.uuid)
        return "receipt", receipt_xml(fields, self.clock.now(), status, accepted.uuid)

    def _failed(self, path: Path) -> int:
        """Counts a failure of `path` and sets when it is tried again; returns the count."""
        count = self._failures.get(path, (0, 0.0))[0] + 1
        delay = min(self.poll_interval * 2 ** count, RETRY_DELAY_MAX)
        self._failures[path] = (count, time.monotonic() + delay)
        return count

# --- file system helpers ---------------------------------------------------------------

def _is_input(name: str) -> bool:
    return not name.startswith(".") and name.endswith(".xml") and not name.endswith(RESULT_SUFFIXES)


def _read(fd: int, limit: int) -> tuple[bytes | None, str]:
    """(content, sha256) of the file; content None when it is larger than `limit`.  At most
    limit + 1 bytes are read; a file already larger is only hashed, chunk by chunk."""
    os.lseek(fd, 0, os.SEEK_SET)
    keep = os.fstat(fd).st_size <= limit
    digest = hashlib.sha256()
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        if keep:
            chunks.append(chunk)
    return (b"".join(chunks) if size <= limit else None), digest.hexdigest()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(name: str) -> str:
    """A file name for a log line: undecodable bytes and control characters (a newline would
    forge a log line) escaped as \\xNN."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda c: f"\\x{ord(c[0]):02x}", text)


def _free_name(directory: Path, name: str) -> str:
    """`name`, or NAME-1.xml, NAME-2.xml, ... : the first that is not taken in `directory`."""
    stem, n = xml_stem(name), 0
    while os.path.lexists(directory / (f"{stem}-{n}.xml" if n else name)):
        n += 1
    return f"{stem}-{n}.xml" if n else name


__all__ = ["DropFolders", "NS"]

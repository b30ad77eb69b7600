"""MeMo drop folders: a tenant's own systems submit MeMo files by writing them into a folder.

Owns the folder protocol and the receipt and error files; the submission itself is
`BridgeService.submit_memo`, made as the tenant's system account.  Layout, per tenant, under
the configured base directory (`[dropfolder] base_dir`, default `<home>/dropfolders/`):

    <tenant>/incoming/    NAME.xml, written by the system (best as .NAME.tmp or NAME.xml.part,
                          then renamed; names starting with "." or not ending in ".xml" are
                          ignored, and so is anything that is not a regular file)
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

Imports no protocol or storage library; blocking work runs through `run_blocking`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import hashlib
import logging
import os
import re
import secrets
import stat
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from bridge.clock import Clock
from bridge.core.service import Accepted, SessionInfo
from bridge.digitalpost.xml import MemoInvalid
from bridge.errors import BridgeError
from bridge.logs import session_id

log = logging.getLogger("bridge.dropfolder")

NS = "urn:dp2bridge:dropfolder:1"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
RESULT_SUFFIXES = (".receipt.xml", ".error.xml")
# An unexpected error (a bug) is retried this often before the file gets an error file.
MAX_UNEXPECTED = 5
RETRY_DELAY_MAX = 60.0
# Files of one tenant processed at once (each waits mostly on fsync and the database commit).
CONCURRENCY = 4

REFUSED = ("The MeMo file was not accepted.", "MeMo-filen blev ikke modtaget.")
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
                log.error("%s/%s of tenant %s: %r", where.name, name, folder.tenant, outcome,
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
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            return self._claim_unreadable(folder, where, name)
        except OSError:                                     # gone, or a symlink
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st = os.fstat(fd)
            now = os.stat(src, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise FileNotFoundError(src)
            return fd, self._move_to_processing(folder, where, name)
        except OSError:                                     # locked by another, or moved meanwhile
            os.close(fd)
            return None

    def _claim_unreadable(self, folder: Folder, where: Path, name: str) -> tuple[int, Path] | None:
        try:
            if not stat.S_ISREG(os.stat(where / name, follow_symlinks=False).st_mode):
                return None
            return -1, self._move_to_processing(folder, where, name)
        except OSError:
            return None

    def _move_to_processing(self, folder: Folder, where: Path, name: str) -> Path:
        if where == folder.processing:
            return where / name
        dst = folder.processing / _free_name(folder.processing, name)
        os.rename(where / name, dst)
        _fsync_dir(folder.processing)
        log.debug("claimed %s of tenant %s as processing/%s", name, folder.tenant, dst.name)
        return dst

    def _handle(self, folder: Folder, principal: Any, fd: int, path: Path) -> None:
        try:
            data: bytes | None = _read(fd, self.service.settings.max_message_size) if fd >= 0 else None
        except OSError:
            data = None
        digest = hashlib.sha256(data).hexdigest() if data is not None else ""
        if not self._finish(folder, path, digest, None):
            try:
                result = self._outcome(folder, principal, path, data, digest, session_id.get())
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
            base, written = _result_base(folder.processed, path.name, digest)
            if written:
                log.info("%s of tenant %s already has processed/%s; moving the original there",
                         path.name, folder.tenant, _result_name(written, base))
            elif result is None:
                return False
            else:
                _write_atomic(folder.processed / _result_name(result[0], base), result[1])
            os.rename(path, folder.processed / f"{base}.xml")
        _fsync_dir(folder.processed)
        _fsync_dir(folder.processing)
        return True

    def _outcome(self, folder: Folder, principal: Any, path: Path, data: bytes | None,
                 digest: str, sid: str) -> tuple[str, bytes]:
        """("receipt"|"error", the file's XML); raises _Retry for a temporary failure."""
        fields = {"file": path.name, "sha256": digest, "tenant": folder.tenant, "session": sid}
        if data is None:
            log.warning("%s of tenant %s cannot be read", path.name, folder.tenant)
            return "error", self._error_xml(fields, UNREADABLE)
        if len(data) > self.service.settings.max_message_size:
            log.warning("%s of tenant %s is too large (%d bytes)", path.name, folder.tenant, len(data))
            return "error", self._error_xml(fields, TOO_LARGE)
        ctx = SessionInfo(sid, "dropfolder", "local", True)
        try:
            accepted: Accepted = self.service.submit_memo(principal, data, ctx)
        except BridgeError as exc:
            if exc.temporary:
                self._failed(path)
                log.warning("%s of tenant %s: temporary failure, tried again later: %s",
                            path.name, folder.tenant, exc)
                raise _Retry() from None
            log.info("%s of tenant %s refused: %s", path.name, folder.tenant, exc)
            return "error", self._error_xml(fields, exc.public, exc)
        except Exception:
            count = self._failed(path)
            log.exception("%s of tenant %s: unexpected error (attempt %d of %d)", path.name,
                          folder.tenant, count, MAX_UNEXPECTED)
            if count < MAX_UNEXPECTED:
                raise _Retry() from None
            return "error", self._error_xml(fields, f"{INTERNAL} (ref {sid})")
        status = "duplicate" if accepted.duplicate else "accepted"
        log.info("%s of tenant %s %s as %s", path.name, folder.tenant, status, accepted.uuid)
        return "receipt", self._receipt_xml(fields, status, accepted.uuid)

    def _failed(self, path: Path) -> int:
        """Counts a failure of `path` and sets when it is tried again; returns the count."""
        count = self._failures.get(path, (0, 0.0))[0] + 1
        delay = min(self.poll_interval * 2 ** count, RETRY_DELAY_MAX)
        self._failures[path] = (count, time.monotonic() + delay)
        return count

    # --- result documents (namespace urn:dp2bridge:dropfolder:1) ------------------------

    def _receipt_xml(self, fields: dict[str, str], status: str, uuid: str) -> bytes:
        root = self._document("receipt", fields, status)
        _sub(root, "messageUUID", uuid)
        return _serialize(root)

    def _error_xml(self, fields: dict[str, str], reason: str, exc: BridgeError | None = None) -> bytes:
        root = self._document("error", fields, "refused")
        for lang, text in zip(("en", "da"), REFUSED):
            _sub(root, "summary", text, {XML_LANG: lang})
        _sub(root, "reason", reason)
        if exc is not None:
            _sub(root, "code", exc.enhanced)                # RFC 3463, as SMTP would say
        for problem in exc.errors if isinstance(exc, MemoInvalid) else ():
            el = _sub(root, "problem", None)
            _sub(el, "path", problem.path)
            if problem.line is not None:
                _sub(el, "line", str(problem.line))
            _sub(el, "message", problem.message, {XML_LANG: "en"})
            _sub(el, "message", problem.message_da, {XML_LANG: "da"})
        return _serialize(root)

    def _document(self, kind: str, fields: dict[str, str], status: str) -> ET.Element:
        root = ET.Element(f"{{{NS}}}{kind}")
        for key in ("file", "sha256", "tenant"):
            _sub(root, key, fields[key])
        _sub(root, "status", status)
        _sub(root, "time", self.clock.now().astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        _sub(root, "session", fields["session"])
        return root


# --- file system helpers ---------------------------------------------------------------

def _is_input(name: str) -> bool:
    return not name.startswith(".") and name.endswith(".xml") and not name.endswith(RESULT_SUFFIXES)


def _read(fd: int, limit: int) -> bytes:
    """The whole file, or one byte more than `limit` (enough to refuse it)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _stem(name: str) -> str:
    return name[:-len(".xml")] if name.endswith(".xml") else name


def _free_name(directory: Path, name: str) -> str:
    """`name`, or NAME-1.xml, NAME-2.xml, ... : the first that is not taken in `directory`."""
    stem, n = _stem(name), 0
    while os.path.lexists(directory / (f"{stem}-{n}.xml" if n else name)):
        n += 1
    return f"{stem}-{n}.xml" if n else name


def _result_name(kind: str, base: str) -> str:
    return f"{base}.{kind}.xml"


def _result_base(processed: Path, name: str, digest: str) -> tuple[str, str]:
    """(base name in processed/, "" or the kind of a result already written for this file).

    A base is free when neither BASE.xml nor a result exists.  A result without its BASE.xml
    whose sha256 is `digest` was written for this very file before a crash."""
    stem, n = _stem(name), 0
    while True:
        base = f"{stem}-{n}" if n else stem
        n += 1
        if os.path.lexists(processed / f"{base}.xml"):
            continue
        results = [k for k in ("receipt", "error") if os.path.lexists(processed / _result_name(k, base))]
        if not results:
            return base, ""
        if digest and _recorded_digest(processed / _result_name(results[0], base)) == digest:
            return base, results[0]


def _recorded_digest(path: Path) -> str:
    try:
        return ET.parse(path).getroot().findtext(f"{{{NS}}}sha256") or ""
    except (OSError, ET.ParseError):
        return ""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sub(parent: ET.Element, tag: str, text: str | None, attrs: dict[str, str] | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NS}}}{tag}", attrs or {})
    el.text = None if text is None else _xml_safe(text)
    return el


def _xml_safe(text: str) -> str:
    """`text` with what XML 1.0 cannot hold (controls, undecodable bytes of a file name) as U+FFFD."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return NOT_XML.sub("\ufffd", text)


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=NS) + b"\n"


__all__ = ["DropFolders", "NS"]

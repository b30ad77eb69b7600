"""IMAP listeners and the connection: TLS, reading commands with literals, writing with back-pressure.

One `Connection` per client: it reads one command at a time (a line, and for
each literal marker `{n}` the continuation "+" and n bytes, or `{n+}` without
"+", RFC 7888), enforcing the limits of DESIGN.md section 6 before reading
anything: command line 64 KiB, literals 4 KiB before authentication, APPEND
literals up to APPENDLIMIT (refused with NO [TOOBIG] before the "+").
Output goes through StreamWriter.drain(), so a client that never reads stalls
its own session instead of growing server memory.  STARTTLS discards whatever
the client pipelined behind it (the CVE-2011-0411 class).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Callable

from bridge.imapserver.parser import literal_marker, strip_literal_marker

log = logging.getLogger("bridge.imap")

MAX_LINE = 64 * 1024
# asyncio's TLS transport (Python 3.11 asyncio.sslproto.SSLProtocol) allocates a read buffer of
# SSLProtocol.max_size (256 KiB) for every connection, idle or not: about 280 KB per idle TLS
# connection (DESIGN.md section 10), 280 MB for 1,000 IDLE clients.  The class attribute is the
# only knob Python 3.11 offers (no create_server() parameter); a TLS record is at most 16 KiB, so
# 20 KiB still reads a whole record per call.  200 idle implicit-TLS connections measured
# 281 KB each before, 46 KB each after.  It is process-wide: SMTP's TLS connections
# get the same smaller read buffer, which only makes their reads come in 20 KiB pieces.
TLS_READ_BUFFER = 20 * 1024
MAX_LITERAL_UNAUTH = 4 * 1024
MAX_LITERAL = 64 * 1024            # for commands other than APPEND
# Inactivity limits (RFC 9051 section 5.4: an autologout timer, at least 30 minutes once
# authenticated; the client's IDLE refresh every 29 minutes resets it).  Before login a
# connection that sends nothing for a minute is closed, so idle sockets cannot pile up.
UNAUTH_IDLE_SECONDS = 60.0
AUTH_IDLE_SECONDS = 31 * 60.0


class LineTooLong(Exception):
    pass


class IdleTimeout(Exception):
    """Nothing came from the client within the connection's inactivity limit."""


class LiteralRefused(Exception):
    """A literal over its limit; `tagged` is the reply already decided for the command."""

    def __init__(self, tag: bytes, size: int, synchronizing: bool) -> None:
        super().__init__(f"literal of {size} bytes refused")
        self.tag, self.size, self.synchronizing = tag, size, synchronizing


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit_tls: bool) -> None:
        self.reader, self.writer = reader, writer
        self.tls = implicit_tls
        peer = writer.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "unknown"
        self.authenticated = False           # the session sets it: the longer inactivity limit

    @property
    def idle_limit(self) -> float:
        return AUTH_IDLE_SECONDS if self.authenticated else UNAUTH_IDLE_SECONDS

    async def read_line(self) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.readuntil(b"\n"), self.idle_limit)
        except asyncio.LimitOverrunError:
            raise LineTooLong() from None
        except asyncio.IncompleteReadError:
            raise ConnectionError("client closed the connection") from None
        except asyncio.TimeoutError:
            raise IdleTimeout() from None

    async def read_command(self, literal_limit: Callable[[list[bytes]], int]) -> list[bytes]:
        """Segments of one command: line text and literal contents, alternating.
        `literal_limit(segments_so_far)` says how large the next literal may be."""
        segments: list[bytes] = []
        total = 0
        while True:
            line = await self.read_line()
            total += len(line)
            if total > MAX_LINE * 4:
                raise LineTooLong()
            marker = literal_marker(line)
            if marker is None:
                segments.append(line.rstrip(b"\r\n"))
                return segments
            size, nonsync = marker
            segments.append(strip_literal_marker(line))
            if size > literal_limit(segments):
                raise LiteralRefused(segments[0].split(b" ", 1)[0], size, not nonsync)
            if not nonsync:
                await self.send(b"+ Ready for literal data")
            try:
                segments.append(await asyncio.wait_for(self.reader.readexactly(size), self.idle_limit))
            except asyncio.TimeoutError:
                raise IdleTimeout() from None

    async def send(self, *lines: bytes) -> None:
        for line in lines:
            self.writer.write(line + b"\r\n")
        await self.writer.drain()

    def write(self, line: bytes) -> None:
        """Queue a line; the session drains after each command."""
        self.writer.write(line + b"\r\n")

    def write_lines(self, lines: list[bytes]) -> None:
        """Queue many lines as one write: one pass through TLS, not one small record each."""
        if lines:
            self.writer.write(b"\r\n".join(lines) + b"\r\n")

    async def drain(self) -> None:
        await self.writer.drain()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        # RFC 3501 section 6.2.1: anything the client sent after STARTTLS before the handshake
        # is not part of the TLS session; drop it so it is never executed.
        buffered = len(self.reader._buffer)  # noqa: SLF001 - no public API for this
        if buffered:
            log.info("discarding %d bytes pipelined behind STARTTLS", buffered)
            self.reader._buffer.clear()  # noqa: SLF001
        await self.writer.start_tls(context)
        self.tls = True

    async def discard_input(self, seconds: float = 1.0) -> None:
        """Lingering close: read and drop what the client is still sending, for a moment, so a
        BYE just written is not lost to the TCP reset that closing with unread data causes.
        Costs at most one read buffer of memory, whatever the client sends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            await self.writer.drain()
            while (left := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(self.reader.read(MAX_LINE), left):
                    return
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
            pass

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, asyncio.TimeoutError, ssl.SSLError):
            pass


def set_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Shrink asyncio's per-connection TLS read buffer (see TLS_READ_BUFFER)."""
    from asyncio import sslproto
    if getattr(sslproto.SSLProtocol, "max_size", 0) > size:
        sslproto.SSLProtocol.max_size = size


async def start_listeners(session_factory: Callable[[Connection], Any], tls_context: ssl.SSLContext,
                          starttls: list[tuple[str, int]], implicit: list[tuple[str, int]]
                          ) -> list[asyncio.AbstractServer]:
    """Start the IMAP listeners; each connection runs `session_factory(conn).run()`."""
    live: set[asyncio.Task[Any]] = set()
    set_tls_read_buffer()

    def handler(implicit_tls: bool) -> Callable[..., Any]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = Connection(reader, writer, implicit_tls)
            task = asyncio.current_task()
            if task:
                live.add(task)
            try:
                await session_factory(conn).run()
            except asyncio.CancelledError:
                pass          # server stopping: end quietly (asyncio would log a cancelled handler)
            finally:
                try:
                    await conn.close()
                except asyncio.CancelledError:
                    pass      # stopping while closing: the transport is closed regardless
                finally:
                    if task:
                        live.discard(task)   # only now, so close_all() waits for the close
        return serve

    servers = [await asyncio.start_server(handler(False), host, port, limit=MAX_LINE, reuse_address=True)
               for host, port in starttls]
    servers += [await asyncio.start_server(handler(True), host, port, limit=MAX_LINE, ssl=tls_context,
                                           reuse_address=True) for host, port in implicit]
    LIVE_TASKS.append(live)
    return servers


LIVE_TASKS: list[set[asyncio.Task[Any]]] = []


async def close_all() -> None:
    """Cancel every IMAP session of this process (server stopping)."""
    tasks = [t for live in LIVE_TASKS for t in live]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    LIVE_TASKS.clear()

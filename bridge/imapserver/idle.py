"""IDLE (RFC 2177, RFC 9051 section 6.3.13): tell the client about changes as they happen.

After `+ idling` the session waits, without a thread, on two things at once: the
client's next line and the selected mailbox's event queue (core/events.py: a
`Filed` from the delivery worker, a `Changed` from another IMAP session after
it changed flags or expunged).  Each event, and a poll every POLL_SECONDS as a
fallback for changes no event announced, runs `ImapSession.sync()`, which sends
EXISTS, EXPUNGE (or VANISHED) and FETCH FLAGS: all are allowed during IDLE
(RFC 9051 section 7).  `DONE` ends the command with the tagged OK; any other
line is answered BAD.  Talks to the store only through the session.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bridge.imapserver.errors import Bad
from bridge.imapserver.parser import Reader
from bridge.imapserver.registry import AUTH, command

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession

# Changes that no event announces (another node, a store edited by the admin CLI) are
# still seen this often.  RFC 2177 clients re-issue IDLE at least every 29 minutes.
POLL_SECONDS = 30.0


@command("IDLE", AUTH)
async def idle(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    await s.conn.send(b"+ idling")
    line = await _wait_for_done(s)
    if line.rstrip(b"\r\n").upper() != b"DONE":
        raise Bad("expected DONE")


async def _wait_for_done(s: "ImapSession") -> bytes:
    """Report changes until the client sends a line; return that line."""
    reading = asyncio.ensure_future(s.conn.read_line())
    try:
        while True:
            await s.sync()
            await s.conn.drain()
            queue = s.selected.queue if s.selected is not None else None
            if queue is None:
                return await reading
            if await _next_event(reading, queue):
                return reading.result()
    finally:
        _dispose(reading)


async def _next_event(reading: "asyncio.Future[bytes]", queue: "asyncio.Queue[Any]") -> bool:
    """Wait for the client's line (True), a mailbox event or the poll interval (False)."""
    getting = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({reading, getting}, timeout=POLL_SECONDS,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        _dispose(getting)
    return reading.done()


def _dispose(task: "asyncio.Future[Any]") -> None:
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()                  # retrieved: no "exception was never retrieved" noise

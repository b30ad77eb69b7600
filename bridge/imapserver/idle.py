"""IDLE (RFC 2177, RFC 9051 section 6.3.13): tell the client about changes as they happen.

After `+ idling` the session waits, without a thread, on two things at once: the
client's next line and the selected mailbox's event queue (core/events.py: a
`Filed` from the delivery worker, a `Changed` from another IMAP session after
it changed flags or expunged).  Each event, and a poll every POLL_SECONDS as a
fallback for changes no event announced, runs `ImapSession.sync()`, which sends
EXISTS, EXPUNGE (or VANISHED) and FETCH FLAGS: all are allowed during IDLE
(RFC 9051 section 7).  `DONE` ends the command with the tagged OK; any other
line is answered BAD.

A shared mailbox (`Shared/<contact point>/...`) is seen only while the grant
lasts: before each update and at least every ACCESS_SECONDS the grant is checked
again (a revocation is made by the admin CLI, in another process, so no event
announces it).  Once it is gone the session sends nothing more about the
mailbox: it leaves the selected state and ends the connection with
`* BYE [NOPERM]`, as a client in IDLE expects no tagged reply before its DONE.
Talks to the store only through the session.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bridge.imapserver.errors import Bad
from bridge.imapserver.parser import Reader
from bridge.imapserver.registry import ANSWERED, AUTH, command

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession

# Changes that no event announces (another node, a store edited by the admin CLI) are
# still seen this often.  RFC 2177 clients re-issue IDLE at least every 29 minutes.
POLL_SECONDS = 30.0
# A revoked grant on a selected shared mailbox is noticed within this time.
ACCESS_SECONDS = 2.0
REVOKED = (b"BYE [NOPERM] access to this shared mailbox was withdrawn; "
           b"adgangen til denne delte postkasse er trukket tilbage")


@command("IDLE", AUTH)
async def idle(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> object:
    args.end()
    await s.conn.send(b"+ idling")
    line = await _wait_for_done(s)
    if line is None:                       # the grant was revoked: BYE sent, no tagged reply
        s.logout = True
        return ANSWERED
    if line.rstrip(b"\r\n").upper() != b"DONE":
        raise Bad("expected DONE")
    return None


async def _wait_for_done(s: "ImapSession") -> bytes | None:
    """Report changes until the client sends a line; return that line (None when the
    selected shared mailbox's grant was revoked meanwhile).  A shared mailbox wakes the
    loop every ACCESS_SECONDS for the grant check only; the store is read for changes
    after an event or every POLL_SECONDS."""
    loop = asyncio.get_running_loop()
    reading = asyncio.ensure_future(s.conn.read_line())
    try:
        woken, synced_at = "event", loop.time()
        while True:
            if not await _still_granted(s):
                s.unselect()
                await s.conn.send(b"* " + REVOKED + b" (ref " + s.id.encode() + b")")
                return None
            if woken == "event" or loop.time() - synced_at >= POLL_SECONDS:
                await s.sync()
                await s.conn.drain()
                synced_at = loop.time()
            sel = s.selected
            if sel is None or sel.queue is None:
                return await reading
            wait = min(ACCESS_SECONDS, POLL_SECONDS) if sel.mailbox.shared else POLL_SECONDS
            woken = await _next_event(reading, sel.queue, wait)
            if woken == "line":
                return reading.result()
    finally:
        _dispose(reading)


async def _still_granted(s: "ImapSession") -> bool:
    """Is the selected mailbox (if shared) still one this account may see?"""
    sel = s.selected
    if sel is None or not sel.mailbox.shared:
        return True
    return bool(await s.blocking(s.ctx.mailboxes.can_access, s.account_id(), sel.mailbox.id))


async def _next_event(reading: "asyncio.Future[bytes]", queue: "asyncio.Queue[Any]", wait: float) -> str:
    """Wait for the client's line ("line"), a mailbox event ("event") or `wait` seconds
    ("timeout")."""
    getting = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({reading, getting}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    finally:
        _dispose(getting)
    if reading.done():
        return "line"
    return "event" if getting.done() and not getting.cancelled() else "timeout"


def _dispose(task: "asyncio.Future[Any]") -> None:
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()                  # retrieved: no "exception was never retrieved" noise

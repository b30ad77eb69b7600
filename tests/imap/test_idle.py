"""IDLE (RFC 2177): new mail, flag changes and expunges reach an idling client at once,
without a thread per idling connection; DONE ends it, anything else is BAD."""

from __future__ import annotations

import re
import time

import pytest

from bridge.clock import SystemClock
from bridge.core.admin import Admin
from bridge.imapserver import idle
from bridge.store.mailboxes import MailboxRepository
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import login, message, wait_for
from tests.imap.conftest import Opener

REF = re.compile(rb" \(ref [0-9a-f]{12}\)$")


def deliver(bridge: RunningBridge, count: int = 1, owner: str = ANNA) -> list[dict]:
    """Send `count` letters to Anna by SMTP and wait until all are filed."""
    before = len(bridge.store.mailbox_entries(owner))
    with login(bridge, CASEWORKER) as c:
        for n in range(count):
            c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, f"Brev {n}"))
    return wait_for(lambda: (e := bridge.store.mailbox_entries(owner)) and len(e) >= before + count and e,
                    timeout=10)


def inbox(bridge: RunningBridge, owner: str = ANNA) -> int:
    """Anna's INBOX mailbox id."""
    from bridge.store import models as m
    from sqlalchemy import select
    with bridge.store.ro() as s:
        account = s.scalar(select(m.Account).where(m.Account.login == owner))
        return s.scalar(select(m.Mailbox.id).where(m.Mailbox.account_id == account.id,
                                                    m.Mailbox.name == "INBOX"))


def set_flags_elsewhere(bridge: RunningBridge, uids: list[int], flags: list[str], announce: bool = True) -> None:
    """What another session's STORE does: change flags in the store, then announce the change."""
    box = inbox(bridge)
    MailboxRepository(bridge.store).store_flags(box, uids, "+", flags)
    if announce:
        bridge.app.events.publish_change(box)


def start_idle(t: Transcript, tag: str = "i1") -> None:
    t.send(tag.encode() + b" IDLE\r\n")
    assert t.readline() == b"+ idling"


def expunge_elsewhere(bridge: RunningBridge, uids: list[int]) -> None:
    """Another session marks `uids` \\Deleted and expunges them with IMAP commands."""
    other = Transcript(bridge, ANNA)
    try:
        other.transact("OK", "SELECT INBOX")
        uid_set = ",".join(str(u) for u in uids)
        lines = _try(other, f"UID STORE {uid_set} +FLAGS.SILENT (\\Deleted)")
        if lines[-1].split(b" ")[1] != b"OK":
            pytest.skip("STORE is not implemented yet (bridge/imapserver/store_cmds.py)")
        lines = _try(other, f"UID EXPUNGE {uid_set}")
        if lines[-1].split(b" ")[1] != b"OK":
            pytest.skip("UID EXPUNGE is not implemented yet (bridge/imapserver/store_cmds.py)")
    finally:
        other.close()


def read_until(t: Transcript, wanted: bytes) -> list[bytes]:
    """The lines before `wanted` (which is read too)."""
    lines = []
    while (line := t.readline()) != wanted:
        lines.append(line)
    return lines


def _try(t: Transcript, command: str) -> list[bytes]:
    """Send a command and return every line up to its tagged reply, whatever the status."""
    t.n += 1
    tag = f"x{t.n}".encode()
    t.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    while not lines or not lines[-1].startswith(tag + b" "):
        lines.append(t.readline())
    return lines


def test_idle_reports_smtp_delivery_within_a_second(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    assert t.transact("OK", "SELECT INBOX")[0] == b"* 0 EXISTS"
    start_idle(t)
    with login(bridge, CASEWORKER) as c:
        c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, "Indkaldelse"))
        sent = time.monotonic()
    t.sock.settimeout(10)                         # generous wait, strict assertion
    assert t.readline() == b"* 1 EXISTS"
    assert time.monotonic() - sent < 1.0
    t.send(b"DONE\r\n")
    assert t.readline() == b"i1 OK IDLE completed"
    assert t.transact("OK", "UID FETCH 1:* (FLAGS)")[0] == b"* 1 FETCH (UID 1 FLAGS ())"


def test_idle_reports_flag_changes_of_other_sessions_at_once(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, 2)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    start_idle(t)
    set_flags_elsewhere(bridge, [2], ["\\Flagged", "$Important"])
    started = time.monotonic()
    assert t.readline() == b"* 2 FETCH (UID 2 FLAGS (\\Flagged $Important))"
    assert time.monotonic() - started < 1.0
    t.send(b"DONE\r\n")
    assert t.readline() == b"i1 OK IDLE completed"
    assert t.transact("OK", "NOOP") == [b"t3 OK NOOP completed"]      # told once, not again


def test_idle_with_condstore_reports_modseq(bridge: RunningBridge, transcript: Opener) -> None:
    entries = deliver(bridge, 1)
    t = transcript(bridge, ANNA)
    t.transact("OK", "ENABLE CONDSTORE")
    t.transact("OK", "SELECT INBOX")
    start_idle(t)
    set_flags_elsewhere(bridge, [1], ["\\Seen"])
    assert t.readline() == b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))" % (entries[0]["modseq"] + 1)
    t.send(b"done\r\n")                           # DONE is case-insensitive
    assert t.readline() == b"i1 OK IDLE completed"


def test_idle_polls_for_changes_no_event_announced(bridge: RunningBridge,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle, "POLL_SECONDS", 0.2)
    deliver(bridge, 1)
    t = Transcript(bridge, ANNA)
    try:
        t.transact("OK", "SELECT INBOX")
        start_idle(t)
        set_flags_elsewhere(bridge, [1], ["\\Answered"], announce=False)
        assert t.readline() == b"* 1 FETCH (UID 1 FLAGS (\\Answered))"
        t.send(b"DONE\r\n")
        assert t.readline() == b"i1 OK IDLE completed"
    finally:
        t.close()


def test_idle_reports_expunges_of_other_sessions(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    deliver(sqlite_bridge, 3)
    t = transcript(sqlite_bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    start_idle(t)
    expunge_elsewhere(sqlite_bridge, [2])
    assert read_until(t, b"* 2 EXPUNGE") in ([], [b"* 2 FETCH (UID 2 FLAGS (\\Deleted))"])
    t.send(b"DONE\r\n")
    assert t.readline() == b"i1 OK IDLE completed"
    assert t.transact("OK", "UID FETCH 1:* (UID)")[:2] == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)"]


def test_anything_but_done_ends_idle_with_bad(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    start_idle(t)
    t.send(b"NOOP\r\n")
    line = t.readline()
    assert REF.search(line) and REF.sub(b"", line) == b"i1 BAD expected DONE"
    t.transact("OK", "NOOP")                      # the session goes on
    t.transact("BAD", "IDLE now")                 # IDLE takes no arguments


def test_idle_without_a_selected_mailbox(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge, ANNA)
    start_idle(t)
    t.send(b"DONE\r\n")
    assert t.readline() == b"i1 OK IDLE completed"


def test_idle_before_login_is_bad(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge)
    line = t.transact("BAD", "IDLE")[-1]
    assert REF.sub(b"", line) == b"t1 BAD log in first"


def test_idle_connections_do_not_hold_threads(sqlite_bridge: RunningBridge) -> None:
    """More idling clients than the session thread pool has threads: others are still served."""
    idlers = [Transcript(sqlite_bridge, ANNA) for _ in range(24)]
    other = Transcript(sqlite_bridge, ANNA)
    try:
        for t in idlers:
            t.transact("OK", "SELECT INBOX")
            start_idle(t)
        started = time.monotonic()
        other.transact("OK", "SELECT INBOX")
        other.transact("OK", "NOOP")
        assert time.monotonic() - started < 5.0          # a held thread pool would hang here
        deliver(sqlite_bridge, 1)
        for t in idlers:
            assert t.readline() == b"* 1 EXISTS"
            t.send(b"DONE\r\n")
            assert t.readline() == b"i1 OK IDLE completed"
    finally:
        for t in idlers + [other]:
            t.close()


def test_idle_on_a_shared_mailbox_ends_when_the_grant_is_revoked(bridge: RunningBridge, transcript: Opener) -> None:
    """After `contact-point revoke` (another process: no event tells the server), a caseworker
    idling on Shared/jobcenter/INBOX hears nothing more about it, not even of new letters,
    and is told BYE [NOPERM] within a few seconds, without having to send DONE."""
    admin = Admin(bridge.store, SystemClock(), "tests")
    t = transcript(bridge, CASEWORKER)
    t.transact("OK", 'SELECT "Shared/jobcenter/INBOX"')
    start_idle(t)
    t.sock.settimeout(10)
    with login(bridge, ANNA) as c:
        c.sendmail(ANNA, [JOBCENTER], message(ANNA, JOBCENTER, "Foer"))
    assert t.readline() == b"* 1 EXISTS"
    admin.revoke(JOBCENTER, CASEWORKER)
    revoked = time.monotonic()
    with login(bridge, ANNA) as c:
        c.sendmail(ANNA, [JOBCENTER], message(ANNA, JOBCENTER, "Efter"))
    wait_for(lambda: len(bridge.store.mailbox_entries(JOBCENTER)) == 2, timeout=10)
    line = t.readline()
    assert REF.sub(b"", line) == b"* " + idle.REVOKED
    assert time.monotonic() - revoked < idle.ACCESS_SECONDS + 2.0
    with pytest.raises(ConnectionError):       # closed, and nothing else was sent
        t.readline()


def test_idle_on_a_shared_mailbox_notices_a_revocation_without_any_event(sqlite_bridge: RunningBridge,
                                                                          transcript: Opener) -> None:
    """Nothing happens in the mailbox after the revocation: the periodic grant check ends IDLE."""
    admin = Admin(sqlite_bridge.store, SystemClock(), "tests")
    t = transcript(sqlite_bridge, CASEWORKER)
    t.transact("OK", 'SELECT "Shared/jobcenter/INBOX"')
    start_idle(t)
    admin.revoke(JOBCENTER, CASEWORKER)
    revoked = time.monotonic()
    t.sock.settimeout(10)
    assert REF.sub(b"", t.readline()) == b"* " + idle.REVOKED
    assert time.monotonic() - revoked < idle.ACCESS_SECONDS + 1.0

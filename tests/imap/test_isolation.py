"""Isolation (issue 3, acceptance 5): no name reaches outside the account.  Whatever the
spelling (`../`, `~`, another account's or an ungranted contact point's names, case,
trailing "/", modified UTF-7, percent-encoding, control characters), SELECT, EXAMINE,
STATUS, DELETE, RENAME, SUBSCRIBE, APPEND, COPY and MOVE answer exactly as for a mailbox
that does not exist.  A revoked grant closes the shared mailbox on the next command."""

from __future__ import annotations

import pytest

from bridge.clock import SystemClock
from bridge.core.admin import Admin
from tests.conftest import ANNA, CASEWORKER, JOBCENTER, LAWYER, RunningBridge
from tests.helpers.imap import Transcript
from tests.imap.conftest import Opener
from tests.imap.test_basics import deliver_letter

MISSING = "Nowhere"
# Names that must all be unknown to Anna (a citizen: no grants, no shared namespace).
FOREIGN = [
    "Shared/jobcenter/INBOX", "shared/jobcenter/INBOX", "SHARED/JOBCENTER/INBOX", "Shared/jobcenter/inbox",
    "Shared/jobcenter/INBOX/", "Shared/jobcenter", "Shared", "Shared/", "Shared/jobcenter/../INBOX",
    "Shared/jobcenter@kommune.dp2.test/INBOX", "Shared/kommune/jobcenter/INBOX",
    "../INBOX", "../../INBOX", "..", "INBOX/../..", "INBOX/../Shared/jobcenter/INBOX", "./INBOX", "INBOX/.",
    "~", "~/INBOX", "~sagsbehandler@kommune.dp2.test/INBOX", "/INBOX", "//INBOX", "INBOX/", "INBOX//",
    "sagsbehandler@kommune.dp2.test/INBOX", "advokat@advokat.dp2.test", "#shared/jobcenter/INBOX",
    "Other Users/sagsbehandler/INBOX", "user/sagsbehandler/INBOX", "user.sagsbehandler",
    "&AC4-&AC4-/INBOX", "Shared&AC8-jobcenter&AC8-INBOX", "&AC8-INBOX", "&AC4-&AC4-",
    "%2E%2E/INBOX", "Shared%2Fjobcenter%2FINBOX", "..%2FINBOX", "*", "%", "Shared/*", "INBOX*",
    "INBOX\x00", "Shared/jobcenter/INBOX\x00", "Sent\r\n", "\u202eXOBNI", "INBOX\u200b",
]


def literal(name: str) -> bytes:
    raw = name.encode("utf-8")
    return b"{%d+}\r\n" % len(raw) + raw


def reply(t: Transcript, command: bytes) -> bytes:
    """The tagged NO reply without its tag and `(ref ...)`."""
    line = t.transact("NO", command)[-1]
    return line.split(b" ", 1)[1].rsplit(b" (ref ", 1)[0]


NONEXISTENT = b"NO [NONEXISTENT] no such mailbox"


@pytest.mark.parametrize("verb", ["SELECT", "EXAMINE", "STATUS", "DELETE", "RENAME", "SUBSCRIBE",
                                  "UNSUBSCRIBE"])
def test_anna_reaches_nothing_outside_her_account(bridge: RunningBridge, verb: str, transcript: Opener) -> None:
    suffix = {"STATUS": b" (MESSAGES)", "RENAME": b" Elsewhere"}.get(verb, b"")
    t = transcript(bridge, ANNA)
    missing = reply(t, verb.encode() + b" " + literal(MISSING) + suffix)
    assert missing == NONEXISTENT
    for name in FOREIGN:
        assert reply(t, verb.encode() + b" " + literal(name) + suffix) == missing, name
    for quoted in (b'"Shared/jobcenter/INBOX"', b"Shared/jobcenter/INBOX", b'"../INBOX"', b"~/INBOX"):
        assert reply(t, verb.encode() + b" " + quoted + suffix) == missing, quoted
    t.transact("OK", "NOOP")


def test_list_shows_nothing_outside_the_account(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    for reference, pattern in [("", "Shared*"), ("", "Shared/%"), ("Shared/", "*"), ("../", "*"),
                               ("~", "*"), ("", "~*"), ("", "../*"), ("Shared/jobcenter/", "%"),
                               ("", "*/INBOX/*")]:
        assert t.transact("OK", f'LIST "{reference}" "{pattern}"')[:-1] == [], (reference, pattern)
    assert t.transact("OK", 'LSUB "" "Shared*"')[:-1] == []


def _store_reply(t: Transcript, command: bytes) -> bytes:
    line = t.transact("NO", command)[-1]
    return line.split(b" ", 1)[1].rsplit(b" (ref ", 1)[0]


def test_append_copy_move_into_foreign_names_answer_as_for_a_missing_mailbox(bridge: RunningBridge,
                                                                             transcript: Opener) -> None:
    deliver_letter(bridge)
    t = transcript(bridge, ANNA)
    message = b"From: anna@borger.dp2.test\r\nSubject: x\r\n\r\nhej\r\n"
    commands = {
        "APPEND": lambda name: b"APPEND " + literal(name) + b" (\\Seen) {%d+}\r\n" % len(message) + message,
        "COPY": lambda name: b"COPY 1 " + literal(name),
        "MOVE": lambda name: b"MOVE 1 " + literal(name),
        "UID COPY": lambda name: b"UID COPY 1:* " + literal(name),
        "UID MOVE": lambda name: b"UID MOVE 1:* " + literal(name),
    }
    t.transact("OK", "SELECT INBOX")
    for verb, make in commands.items():
        missing = _store_reply(t, make(MISSING))
        assert missing.startswith((b"NO [TRYCREATE] ", b"NO [NONEXISTENT] ")), (verb, missing)
        for name in FOREIGN:
            assert _store_reply(t, make(name)) == missing, (verb, name)
    assert t.transact("OK", "STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 1)'


def test_caseworker_sees_only_granted_contact_points(bridge: RunningBridge, transcript: Opener) -> None:
    Admin(bridge.store, SystemClock(), "tests").add_contact_point("borgerservice@kommune.dp2.test",
                                                                 "Borgerservice")
    t = transcript(bridge, CASEWORKER)
    assert t.transact("OK", 'LIST "" "Shared/*"')[:-1] == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Shared/jobcenter"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Shared/jobcenter/INBOX"']
    t.transact("OK", 'EXAMINE "Shared/jobcenter/INBOX"')
    missing = reply(t, b'SELECT "Shared/nosuch/INBOX"')
    assert missing == NONEXISTENT
    for name in ("Shared/borgerservice/INBOX", "Shared/borgerservice", "shared/jobcenter/INBOX",
                 "Shared/jobcenter/INBOX/", "Shared/jobcenter/Sent", "Shared/jobcenter/../jobcenter/INBOX",
                 "Shared/jobcenter/&AC4-&AC4-/INBOX"):
        assert reply(t, b"SELECT " + literal(name)) == missing, name
        assert reply(t, b"STATUS " + literal(name) + b" (MESSAGES)") == missing, name
    t = transcript(bridge, LAWYER)
    assert reply(t, b'SELECT "Shared/jobcenter/INBOX"') == NONEXISTENT
    assert t.transact("OK", 'LIST "" "Shared*"')[:-1] == []


def test_revoked_grant_is_checked_on_every_command(bridge: RunningBridge) -> None:
    """A session that already selected the shared mailbox is told `* OK [CLOSED]` on its next
    command after the revocation and is back in the authenticated state: commands that need a
    selected mailbox get NONEXISTENT, others (NOOP, LIST, SELECT...) run as usual."""
    admin = Admin(bridge.store, SystemClock(), "tests")
    a, b = Transcript(bridge, CASEWORKER), Transcript(bridge, CASEWORKER)
    try:
        a.transact("OK", 'SELECT "Shared/jobcenter/INBOX"')
        b.transact("OK", 'SELECT "Shared/jobcenter/INBOX"')
        assert a.transact("OK", "UID FETCH 1:* (FLAGS)")[:-1] == []
        admin.revoke(JOBCENTER, CASEWORKER)
        lines = a.transact("NO", "UID FETCH 1:* (FLAGS)")
        assert lines[0] == b"* OK [CLOSED] mailbox closed"
        assert lines[1].split(b" (ref ")[0] == b"t4 " + NONEXISTENT
        assert a.transact("BAD", "UID FETCH 1:* (FLAGS)")[-1].startswith(b"t5 BAD select a mailbox first")
        assert b.transact("OK", "NOOP") == [b"* OK [CLOSED] mailbox closed", b"t3 OK NOOP completed"]
        assert b.transact("OK", "NOOP") == [b"t4 OK NOOP completed"]
        assert reply(a, b'SELECT "Shared/jobcenter/INBOX"') == NONEXISTENT
        assert reply(a, b'STATUS "Shared/jobcenter/INBOX" (MESSAGES)') == NONEXISTENT
        assert a.transact("OK", 'LIST "" "Shared*"')[:-1] == []
        admin.grant(JOBCENTER, CASEWORKER)
        a.transact("OK", 'SELECT "Shared/jobcenter/INBOX"')
    finally:
        a.close()
        b.close()

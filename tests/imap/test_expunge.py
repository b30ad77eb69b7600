"""EXPUNGE, UID EXPUNGE (RFC 4315) and CLOSE: renumbering, MODSEQ, the expunged record."""

from __future__ import annotations

import re

from sqlalchemy import select

from bridge.store import models as m
from tests.conftest import ANNA, RunningBridge
from tests.helpers.imap import Transcript
from tests.imap.conftest import Opener
from tests.imap.test_append import seed
from tests.imap.test_store_cmds import bare, tagged


def highestmodseq(t: Transcript, mailbox: str = "INBOX") -> int:
    line = t.transact("OK", f"STATUS {mailbox} (HIGHESTMODSEQ)")[0]
    return int(re.search(rb"HIGHESTMODSEQ (\d+)", line).group(1))


def expunged_rows(bridge: RunningBridge, mailbox: str = "INBOX") -> list[tuple[int, int]]:
    with bridge.store.ro() as s:
        box = s.scalars(select(m.Mailbox).join(m.Account, m.Account.id == m.Mailbox.account_id).where(
            m.Account.login == ANNA, m.Mailbox.name == mailbox)).one()
        return [(e.uid, e.modseq) for e in s.scalars(select(m.Expunged).where(
            m.Expunged.mailbox_id == box.id).order_by(m.Expunged.uid))]


def test_expunge_renumbers_highest_first_and_records_the_uids(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 5)
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "STORE 2:3,5 +FLAGS.SILENT (\\Deleted)")
    before = highestmodseq(t)
    assert t.transact("OK", "EXPUNGE") == [b"* 5 EXPUNGE", b"* 3 EXPUNGE", b"* 2 EXPUNGE",
                                           tagged(t, "OK EXPUNGE completed")]
    after = highestmodseq(t)
    assert after == before + 1
    assert expunged_rows(bridge) == [(2, after), (3, after), (5, after)]
    assert t.transact("OK", "FETCH 1:* (UID)")[:-1] == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 4)"]
    assert t.transact("OK", "EXPUNGE") == [tagged(t, "OK EXPUNGE completed")]    # nothing left to do
    assert highestmodseq(t) == after
    t.transact("BAD", "EXPUNGE 1")


def test_uid_expunge_removes_only_the_named_deleted_messages(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 4)
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert t.transact("OK", "UID EXPUNGE 2:4") == [b"* 3 EXPUNGE", b"* 2 EXPUNGE",
                                                   tagged(t, "OK EXPUNGE completed")]
    assert t.transact("OK", "UID EXPUNGE 10:20") == [tagged(t, "OK EXPUNGE completed")]
    assert t.transact("OK", "UID EXPUNGE 4:1") == [b"* 1 EXPUNGE", tagged(t, "OK EXPUNGE completed")]
    assert t.transact("OK", "FETCH 1:* (UID)")[:-1] == [b"* 1 FETCH (UID 4)"]
    t.transact("BAD", "UID EXPUNGE")
    t.transact("BAD", "UID EXPUNGE 0")


def test_expunge_with_condstore_and_qresync(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 3)
    t.transact("OK", "ENABLE QRESYNC")
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    lines = t.transact("OK", "EXPUNGE")
    tag = tagged(t, "")
    assert lines == [b"* VANISHED 1,3", tag + f"OK [HIGHESTMODSEQ {highestmodseq(t)}] EXPUNGE completed".encode()]


def test_other_sessions_learn_of_an_expunge_at_their_next_command(bridge: RunningBridge) -> None:
    t, other = Transcript(bridge, ANNA), Transcript(bridge, ANNA)
    try:
        seed(t, 3)
        t.transact("OK", "SELECT INBOX")
        other.transact("OK", "SELECT INBOX")
        t.transact("OK", "STORE 2 +FLAGS.SILENT (\\Deleted)")
        t.transact("OK", "EXPUNGE")
        other.transact("OK", "FETCH 2 (UID)")             # no EXPUNGE during FETCH
        assert other.transact("OK", "NOOP") == [b"* 2 EXPUNGE", tagged(other, "OK NOOP completed")]
        assert other.transact("OK", "FETCH 2 (UID)")[0] == b"* 2 FETCH (UID 3)"
    finally:
        t.close()
        other.close()


def test_close_expunges_silently_but_not_when_examined(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 3)
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    t.transact("OK", "EXAMINE INBOX")
    assert t.transact("OK", "CLOSE") == [tagged(t, "OK CLOSE completed")]
    assert t.transact("OK", "STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 3)'
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", "CLOSE") == [tagged(t, "OK CLOSE completed")]
    assert t.transact("OK", "STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 2)'
    assert [uid for uid, _ in expunged_rows(bridge)] == [1]
    assert bare(t.transact("BAD", "EXPUNGE")[-1]) == b"BAD select a mailbox first"

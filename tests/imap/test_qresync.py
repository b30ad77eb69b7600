"""QRESYNC (RFC 7162 section 3.2): SELECT (QRESYNC ...), VANISHED (EARLIER), UID FETCH
(CHANGEDSINCE n VANISHED), VANISHED instead of EXPUNGE; and where unsolicited EXPUNGE may
appear at all (RFC 9051 section 7: never while answering FETCH, STORE or SEARCH by number)."""

from __future__ import annotations

import re

import pytest

from bridge.store import models
from tests.conftest import ANNA, RunningBridge
from tests.helpers.imap import Transcript
from tests.imap.conftest import Opener
from tests.imap.test_condstore import highestmodseq
from tests.imap.test_idle import deliver

pytestmark = pytest.mark.skipif(not hasattr(models, "Expunged"),
                                reason="the expunged table (migration 0002) is not there yet")


def select_state(t: Transcript, command: str = "SELECT INBOX") -> tuple[list[bytes], int, int]:
    """SELECT; (the lines after the HIGHESTMODSEQ line, UIDVALIDITY, HIGHESTMODSEQ)."""
    lines = t.transact("OK", command)
    text = b"\n".join(lines)
    uidvalidity = int(re.search(rb"\[UIDVALIDITY (\d+)\]", text).group(1))
    hms_at = next(i for i, line in enumerate(lines) if line.startswith(b"* OK [HIGHESTMODSEQ "))
    hms = int(re.search(rb"(\d+)", lines[hms_at]).group(1))
    return lines[hms_at + 1:], uidvalidity, hms


def modseqs(bridge: RunningBridge) -> dict[int, int]:
    return {e["uid"]: e["modseq"] for e in bridge.store.mailbox_entries(ANNA)}


def change_from_other_sessions(bridge: RunningBridge) -> None:
    """Flag UID 2, read UID 4 (\\Seen), expunge UIDs 3 and 5, and deliver UID 6."""
    b, c = Transcript(bridge, ANNA), Transcript(bridge, ANNA)
    try:
        b.transact("OK", "SELECT INBOX")
        c.transact("OK", "SELECT INBOX")
        b.transact("OK", "UID STORE 2 +FLAGS.SILENT (\\Flagged)")
        c.transact("OK", "UID FETCH 4 (BODY[TEXT])")
        b.transact("OK", "UID STORE 3,5 +FLAGS.SILENT (\\Deleted)")
        b.transact("OK", "UID EXPUNGE 3,5")
    finally:
        b.close()
        c.close()
    deliver(bridge, 1)


@pytest.fixture
def known(bridge: RunningBridge) -> tuple[int, int]:
    """Five letters, seen by a QRESYNC client that remembers (UIDVALIDITY, HIGHESTMODSEQ);
    then other sessions change them (change_from_other_sessions)."""
    deliver(bridge, 5)
    t = Transcript(bridge, ANNA)
    try:
        t.transact("OK", "ENABLE QRESYNC")
        _, uidvalidity, hms = select_state(t)
    finally:
        t.close()
    change_from_other_sessions(bridge)
    return uidvalidity, hms


def test_qresync_client_gets_exactly_the_changed_flags_and_vanished_uids(
        bridge: RunningBridge, known: tuple[int, int]) -> None:
    uidvalidity, hms = known
    ms = modseqs(bridge)
    t = Transcript(bridge, ANNA)
    try:
        assert t.transact("OK", "ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC"
        after, _, now = select_state(t, f"SELECT INBOX (QRESYNC ({uidvalidity} {hms}))")
        assert now == highestmodseq(bridge) > hms
        assert after == [
            b"* VANISHED (EARLIER) 3,5",
            b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))" % ms[2],
            b"* 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (%d))" % ms[4],
            b"* 4 FETCH (UID 6 FLAGS () MODSEQ (%d))" % ms[6],
            b"t3 OK [READ-WRITE] SELECT completed"]
        # Nothing changed since: a second resync of the same client is empty.
        after, _, _ = select_state(t, f"EXAMINE INBOX (QRESYNC ({uidvalidity} {now}))")
        assert after == [b"t4 OK [READ-ONLY] EXAMINE completed"]
    finally:
        t.close()


def test_qresync_known_uids_limit_the_answer(bridge: RunningBridge, known: tuple[int, int], transcript: Opener) -> None:
    uidvalidity, hms = known
    ms = modseqs(bridge)
    t = transcript(bridge, ANNA)
    t.transact("OK", "ENABLE QRESYNC")
    after, _, _ = select_state(t, f"EXAMINE INBOX (QRESYNC ({uidvalidity} {hms} 1:4 (1:4 1:4)))")
    assert after[:3] == [b"* VANISHED (EARLIER) 3",
                         b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))" % ms[2],
                         b"* 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (%d))" % ms[4]]
    assert after[3:] == [b"t3 OK [READ-ONLY] EXAMINE completed"]         # not UID 6: unknown


def test_qresync_with_another_uidvalidity_reports_nothing(bridge: RunningBridge,
                                                          known: tuple[int, int]) -> None:
    uidvalidity, hms = known
    t = Transcript(bridge, ANNA)
    try:
        t.transact("OK", "ENABLE QRESYNC")
        after, _, _ = select_state(t, f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {hms}))")
        assert after == [b"t3 OK [READ-WRITE] SELECT completed"]
    finally:
        t.close()


def test_uid_fetch_changedsince_vanished(bridge: RunningBridge, known: tuple[int, int], transcript: Opener) -> None:
    _, hms = known
    ms = modseqs(bridge)
    t = transcript(bridge, ANNA)
    t.transact("OK", "ENABLE QRESYNC")
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)") == [
        b"* VANISHED (EARLIER) 3,5",
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))" % ms[2],
        b"* 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (%d))" % ms[4],
        b"* 4 FETCH (UID 6 FLAGS () MODSEQ (%d))" % ms[6],
        b"t4 OK FETCH completed"]
    assert t.transact("OK", f"UID FETCH 4:5 (FLAGS) (CHANGEDSINCE {hms} VANISHED)") == [
        b"* VANISHED (EARLIER) 5",
        b"* 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (%d))" % ms[4],
        b"t5 OK FETCH completed"]
    t.transact("BAD", f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")     # UID FETCH only
    t.transact("BAD", "UID FETCH 1:* (FLAGS) (VANISHED)")                     # needs CHANGEDSINCE


def test_vanished_modifier_and_qresync_parameter_need_enable_qresync(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, 1)
    t = transcript(bridge, ANNA)
    t.transact("OK", "ENABLE CONDSTORE")
    t.transact("BAD", "SELECT INBOX (QRESYNC (1 1))")
    t.transact("OK", "SELECT INBOX")
    t.transact("BAD", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    t.transact("OK", "ENABLE QRESYNC")
    t.transact("BAD", "SELECT INBOX (QRESYNC (1))")                # MODSEQ missing
    t.transact("BAD", "SELECT INBOX (QRESYNC (1 x))")
    t.transact("BAD", "SELECT INBOX (QRESYNC (1 1 1:2 (1:2)))")    # seq-match needs two sets


def test_reselect_with_qresync_announces_closed(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    t.transact("OK", "ENABLE QRESYNC")
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", "EXAMINE INBOX")[0] == b"* OK [CLOSED] previous mailbox closed"


def _expunge_uid_2_elsewhere(bridge: RunningBridge) -> None:
    other = Transcript(bridge, ANNA)
    try:
        other.transact("OK", "SELECT INBOX")
        other.transact("OK", "UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        other.transact("OK", "UID EXPUNGE 2")
    finally:
        other.close()


def test_expunge_elsewhere_is_vanished_once_qresync_is_enabled(bridge: RunningBridge) -> None:
    deliver(bridge, 3)
    t, plain = Transcript(bridge, ANNA), Transcript(bridge, ANNA)
    try:
        t.transact("OK", "ENABLE QRESYNC")
        t.transact("OK", "SELECT INBOX")
        plain.transact("OK", "SELECT INBOX")
        _expunge_uid_2_elsewhere(bridge)
        assert t.transact("OK", "NOOP") == [b"* VANISHED 2", b"t4 OK NOOP completed"]
        assert plain.transact("OK", "NOOP") == [b"* 2 EXPUNGE", b"t3 OK NOOP completed"]
    finally:
        t.close()
        plain.close()


def test_no_expunge_while_answering_fetch_store_search_by_number(bridge: RunningBridge, transcript: Opener) -> None:
    """RFC 9051 section 7.5.1: EXPUNGE must not be sent while answering FETCH, STORE or SEARCH
    by sequence number (the client's numbers would shift under it); the next NOOP tells."""
    deliver(bridge, 3)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    _expunge_uid_2_elsewhere(bridge)
    lines = t.transact("OK", "FETCH 1:3 (UID)")
    assert not any(b"EXPUNGE" in line for line in lines)
    assert lines[0] == b"* 1 FETCH (UID 1)" and lines[-2] == b"* 3 FETCH (UID 3)"
    lines = t.transact("OK", "STORE 3 +FLAGS (\\Flagged)")
    assert not any(b"EXPUNGE" in line for line in lines)
    lines = t.transact("OK", "SEARCH ALL")
    assert not any(b"EXPUNGE" in line for line in lines)
    assert t.transact("OK", "NOOP") == [b"* 2 EXPUNGE", b"t6 OK NOOP completed"]
    assert t.transact("OK", "FETCH 1:* (UID)")[:2] == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)"]


def test_uid_fetch_may_report_the_expunge_after_its_answer(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, 3)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    _expunge_uid_2_elsewhere(bridge)
    assert t.transact("OK", "UID FETCH 1:* (UID)") == [
        b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)", b"* 2 EXPUNGE", b"t3 OK FETCH completed"]

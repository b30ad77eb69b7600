"""CONDSTORE (RFC 7162 section 3.1): ENABLE and SELECT (CONDSTORE), HIGHESTMODSEQ, FETCH MODSEQ
and the CHANGEDSINCE modifier, MODSEQ in unsolicited FETCH responses."""

from __future__ import annotations

from tests.conftest import ANNA, RunningBridge
from tests.helpers.imap import Transcript
from tests.imap.conftest import Opener
from tests.imap.test_idle import deliver, set_flags_elsewhere


def highestmodseq(bridge: RunningBridge) -> int:
    from bridge.store.mailboxes import MailboxRepository
    from tests.imap.test_idle import inbox
    view = MailboxRepository(bridge.store).view(inbox(bridge))
    return view.highestmodseq


def test_enable_condstore_and_select_report_highestmodseq(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, 2)
    t = transcript(bridge, ANNA)
    assert t.transact("OK", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE", b"t2 OK ENABLE completed"]
    assert t.transact("OK", "ENABLE CONDSTORE") == [b"* ENABLED", b"t3 OK ENABLE completed"]
    lines = t.transact("OK", "SELECT INBOX")
    assert b"* OK [HIGHESTMODSEQ %d] highest" % highestmodseq(bridge) in lines


def test_select_condstore_parameter_enables_modseq_in_responses(bridge: RunningBridge, transcript: Opener) -> None:
    entries = deliver(bridge, 2)
    t = transcript(bridge, ANNA)
    lines = t.transact("OK", "EXAMINE INBOX (CONDSTORE)")
    assert b"* OK [HIGHESTMODSEQ %d] highest" % highestmodseq(bridge) in lines
    assert lines[-1] == b"t2 OK [READ-ONLY] EXAMINE completed"
    set_flags_elsewhere(bridge, [1], ["\\Flagged"])
    assert t.transact("OK", "NOOP") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (%d))" % (entries[1]["modseq"] + 1),
        b"t3 OK NOOP completed"]


def test_select_with_unknown_parameter_is_bad(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    t.transact("BAD", "SELECT INBOX (FOO)")
    t.transact("BAD", "SELECT INBOX (CONDSTORE")


def test_fetch_modseq_reports_each_message_modseq(bridge: RunningBridge, transcript: Opener) -> None:
    entries = deliver(bridge, 2)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", "FETCH 1:* (MODSEQ)") == [
        b"* 1 FETCH (MODSEQ (%d))" % entries[0]["modseq"],
        b"* 2 FETCH (MODSEQ (%d))" % entries[1]["modseq"], b"t3 OK FETCH completed"]
    # FETCH MODSEQ is a CONDSTORE-enabling command: unsolicited FETCH now carries MODSEQ too
    set_flags_elsewhere(bridge, [2], ["\\Answered"])
    assert t.transact("OK", "NOOP")[0] == \
        b"* 2 FETCH (UID 2 FLAGS (\\Answered) MODSEQ (%d))" % highestmodseq(bridge)


def test_changedsince_returns_only_changed_messages_with_modseq(bridge: RunningBridge) -> None:
    deliver(bridge, 3)
    t = Transcript(bridge, ANNA)
    other = Transcript(bridge, ANNA)
    try:
        t.transact("OK", "ENABLE CONDSTORE")
        t.transact("OK", "SELECT INBOX")
        before = highestmodseq(bridge)
        other.transact("OK", "SELECT INBOX")
        other.transact("OK", "UID FETCH 2 (BODY[TEXT])")          # sets \Seen on UID 2
        after = highestmodseq(bridge)
        assert after == before + 1
        assert t.transact("OK", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before})") == [
            b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))" % after, b"t4 OK FETCH completed"]
        assert t.transact("OK", f"FETCH 1:* (UID) (CHANGEDSINCE {after})") == [b"t5 OK FETCH completed"]
        assert t.transact("OK", "NOOP") == [b"t6 OK NOOP completed"]   # already told
    finally:
        t.close()
        other.close()


def test_changedsince_by_sequence_number(bridge: RunningBridge, transcript: Opener) -> None:
    entries = deliver(bridge, 2)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", f"FETCH 1:* (UID) (CHANGEDSINCE {entries[0]['modseq']})") == [
        b"* 2 FETCH (UID 2 MODSEQ (%d))" % entries[1]["modseq"], b"t3 OK FETCH completed"]


def test_bad_fetch_modifiers(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, 1)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    t.transact("BAD", "FETCH 1 (FLAGS) (CHANGEDSINCE)")
    t.transact("BAD", "FETCH 1 (FLAGS) (CHANGEDSINCE x)")
    t.transact("BAD", "FETCH 1 (FLAGS) (SOMETHING 1)")
    t.transact("BAD", "FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)")

"""STORE, COPY and MOVE (RFC 9051, RFC 7162 UNCHANGEDSINCE, RFC 4315 COPYUID, RFC 6851): raw transcripts."""

from __future__ import annotations

import re

from tests.conftest import ANNA, RunningBridge
from tests.helpers.imap import Transcript
from tests.imap.conftest import Opener
from tests.imap.test_append import REF, seed, uidvalidity


def tagged(t: Transcript, text: str) -> bytes:
    return f"t{t.n} {text}".encode()


def bare(line: bytes) -> bytes:
    """A NO/BAD line without its tag and "(ref ...)"."""
    assert REF.search(line), line
    return REF.sub(b"", line).split(b" ", 1)[1]


def test_store_sets_adds_and_removes_flags(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 3)
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", "STORE 1:2 +FLAGS (\\Seen $Sag)") == [
        b"* 1 FETCH (FLAGS (\\Seen $Sag))", b"* 2 FETCH (FLAGS (\\Seen $Sag))", tagged(t, "OK STORE completed")]
    assert t.transact("OK", "STORE 2 -FLAGS ($Sag)") == [
        b"* 2 FETCH (FLAGS (\\Seen))", tagged(t, "OK STORE completed")]
    assert t.transact("OK", "STORE 3 FLAGS \\flagged \\Answered") == [
        b"* 3 FETCH (FLAGS (\\Answered \\Flagged))", tagged(t, "OK STORE completed")]
    assert t.transact("OK", "UID STORE 1 FLAGS.SILENT ()") == [tagged(t, "OK STORE completed")]
    assert t.transact("OK", "UID STORE 2:3 +FLAGS (\\Draft)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Draft \\Seen))", b"* 3 FETCH (UID 3 FLAGS (\\Answered \\Draft \\Flagged))",
        tagged(t, "OK STORE completed")]
    assert t.transact("OK", "FETCH 1:* (FLAGS)")[:3] == [
        b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS (\\Draft \\Seen))",
        b"* 3 FETCH (FLAGS (\\Answered \\Draft \\Flagged))"]
    t = Transcript(bridge, ANNA)                       # persisted, seen by a new session
    try:
        t.transact("OK", "EXAMINE INBOX")
        assert t.transact("OK", "FETCH 2 (FLAGS)")[0] == b"* 2 FETCH (FLAGS (\\Draft \\Seen))"
    finally:
        t.close()


def test_store_sequence_sets_reversed_star_and_beyond_uidnext(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 3)
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", "STORE 3:2 +FLAGS.SILENT (\\Seen)") == [tagged(t, "OK STORE completed")]
    assert t.transact("OK", "STORE * +FLAGS ($Sidste)") == [
        b"* 3 FETCH (FLAGS (\\Seen $Sidste))", tagged(t, "OK STORE completed")]
    assert t.transact("OK", "UID STORE 4:99 +FLAGS (\\Seen)") == [tagged(t, "OK STORE completed")]
    assert t.transact("OK", "UID STORE 99:* +FLAGS (\\Flagged)") == [
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Seen $Sidste))", tagged(t, "OK STORE completed")]
    assert bare(t.transact("BAD", "STORE 4 +FLAGS (\\Seen)")[-1]) == b"BAD message number out of range"
    assert t.transact("OK", "FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS ())"


def test_store_syntax_errors_are_bad(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 1)
    t.transact("OK", "SELECT INBOX")
    for cmd in ("STORE 1 +FLAGS (\\Bogus)", "STORE 1 +FLAGS (\\Recent)", "STORE 1 +FLAGS (\\*)",
                'STORE 1 +FLAGS ("quoted")', "STORE 1 +FLAGS (\\Seen", "STORE 1 FROB (\\Seen)",
                "STORE 1 +FLAGS", "STORE 0 +FLAGS (\\Seen)", "STORE x +FLAGS (\\Seen)",
                "STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)", "STORE 1 (FROB 1) +FLAGS (\\Seen)",
                "STORE 1 +FLAGS (%Work)"):
        t.transact("BAD", cmd)
    assert t.transact("OK", "FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS ())"


def test_store_in_an_examined_mailbox_is_refused(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 1)
    t.transact("OK", "EXAMINE INBOX")
    assert bare(t.transact("NO", "STORE 1 +FLAGS (\\Seen)")[-1]) == b"NO [READ-ONLY] mailbox is read-only"
    t.transact("BAD", "STORE 1 +FLAGS (\\Bogus)")        # syntax first
    assert bare(t.transact("NO", "MOVE 1 Archive")[-1]) == b"NO [READ-ONLY] mailbox is read-only"
    assert bare(t.transact("NO", "EXPUNGE")[-1]) == b"NO [READ-ONLY] mailbox is read-only"
    assert t.transact("OK", "FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS ())"


def test_store_unchangedsince_answers_modified(bridge: RunningBridge) -> None:
    t = Transcript(bridge, ANNA)
    other = Transcript(bridge, ANNA)
    try:
        seed(t, 3)
        t.transact("OK", "SELECT INBOX (CONDSTORE)")
        modseqs = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", b"".join(
            t.transact("OK", "FETCH 1:3 (MODSEQ)")))]
        other.transact("OK", "SELECT INBOX")
        other.transact("OK", "STORE 2 +FLAGS.SILENT ($Andet)")
        since = max(modseqs)
        lines = t.transact("OK", f"STORE 1:3 (UNCHANGEDSINCE {since}) +FLAGS (\\Seen)")
        assert lines[-1] == tagged(t, "OK [MODIFIED 2] conditional STORE failed")
        assert [re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (n)", x) for x in lines[:-1]] == [
            b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (n))", b"* 3 FETCH (FLAGS (\\Seen) MODSEQ (n))"]
        new = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", b"".join(lines))]
        assert min(new) > since
        # .SILENT with CONDSTORE still tells the new MODSEQ (RFC 7162 section 3.2)
        # UID STORE then reports what another session changed (message 2, refused above)
        lines = t.transact("OK", "UID STORE 1 (UNCHANGEDSINCE 0) -FLAGS.SILENT (\\Seen)")
        assert re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (n)", lines[0]) == b"* 2 FETCH (UID 2 FLAGS ($Andet) MODSEQ (n))"
        assert lines[1:] == [tagged(t, "OK [MODIFIED 1] conditional STORE failed")]
        lines = t.transact("OK", f"UID STORE 1 (UNCHANGEDSINCE {max(new)}) -FLAGS.SILENT (\\Seen)")
        assert len(lines) == 2 and re.fullmatch(rb"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)", lines[0])
        assert lines[1] == tagged(t, "OK STORE completed")
        status = t.transact("OK", "STATUS INBOX (HIGHESTMODSEQ)")[0]
        assert int(re.search(rb"HIGHESTMODSEQ (\d+)", status).group(1)) == \
            int(re.search(rb"MODSEQ \((\d+)\)", lines[0]).group(1))
    finally:
        t.close()
        other.close()


def test_copy_keeps_flags_and_answers_copyuid(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    raws = seed(t, 3)
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "STORE 2 +FLAGS.SILENT (\\Flagged $Sag)")
    v = uidvalidity(t, "Archive")
    assert t.transact("OK", "COPY 2:3 Archive") == [tagged(t, f"OK [COPYUID {v} 2:3 1:2] COPY completed")]
    assert t.transact("OK", "UID COPY 3,1 Archive") == [tagged(t, f"OK [COPYUID {v} 1,3 3:4] COPY completed")]
    assert t.transact("OK", "UID COPY 50:60 Archive") == [tagged(t, "OK COPY completed")]
    assert bare(t.transact("NO", "COPY 1 Nowhere")[-1]) == b"NO [TRYCREATE] no such mailbox"
    assert bare(t.transact("NO", 'COPY 1 "Shared/jobcenter/INBOX"')[-1]) == b"NO [TRYCREATE] no such mailbox"
    t.transact("BAD", "COPY 9 Archive")
    t.transact("BAD", "COPY 1")
    # a copy into the selected mailbox shows up at once
    vi = uidvalidity(t, "INBOX")
    assert t.transact("OK", "UID COPY 1 INBOX") == [
        b"* 4 EXISTS", tagged(t, f"OK [COPYUID {vi} 1 4] COPY completed")]
    t.transact("OK", "EXAMINE Archive")
    lines = t.transact("OK", "UID FETCH 1:* (FLAGS BODY.PEEK[])")
    assert lines[0] == b"* 1 FETCH (UID 1 FLAGS (\\Flagged $Sag) BODY[] {%d}\r\n" % len(raws[1]) + raws[1] + b")"
    assert lines[3] == b"* 4 FETCH (UID 4 FLAGS () BODY[] {%d}\r\n" % len(raws[2]) + raws[2] + b")"
    assert len(lines) == 5


def test_move_sends_copyuid_then_expunges(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 4)
    t.transact("OK", "SELECT INBOX")
    v = uidvalidity(t, "Trash")
    assert t.transact("OK", "MOVE 2:3 Trash") == [
        f"* OK [COPYUID {v} 2:3 1:2] moved".encode(), b"* 3 EXPUNGE", b"* 2 EXPUNGE",
        tagged(t, "OK MOVE completed")]
    assert t.transact("OK", "UID MOVE 4 Trash") == [
        f"* OK [COPYUID {v} 4 3] moved".encode(), b"* 2 EXPUNGE", tagged(t, "OK MOVE completed")]
    assert t.transact("OK", "UID MOVE 2:3 Trash") == [tagged(t, "OK MOVE completed")]  # already gone
    assert bare(t.transact("NO", "MOVE 1 Nowhere")[-1]) == b"NO [TRYCREATE] no such mailbox"
    assert t.transact("OK", "FETCH 1:* (UID)") == [b"* 1 FETCH (UID 1)", tagged(t, "OK FETCH completed")]
    assert t.transact("OK", 'STATUS Trash (MESSAGES UIDNEXT)')[0] == b'* STATUS "Trash" (MESSAGES 3 UIDNEXT 4)'


def test_move_with_qresync_reports_vanished(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    seed(t, 3)
    t.transact("OK", "ENABLE QRESYNC")
    t.transact("OK", "SELECT INBOX")
    v = uidvalidity(t, "Archive")
    assert t.transact("OK", "MOVE 1:2 Archive") == [
        f"* OK [COPYUID {v} 1:2 1:2] moved".encode(), b"* VANISHED 1:2", tagged(t, "OK MOVE completed")]

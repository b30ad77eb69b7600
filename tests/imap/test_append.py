"""APPEND (RFC 9051 section 6.3.12) with UIDPLUS, LITERAL+ and APPENDLIMIT: raw transcripts."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid

from sqlalchemy import select

from bridge.core.audit import verify_chain
from bridge.core.mimeinfo import analyze
from bridge.store import models as m
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import login, message, wait_for
from tests.imap.conftest import Opener

REF = re.compile(rb" \(ref [0-9a-f]+\)$")


def uidvalidity(t: Transcript, mailbox: str) -> int:
    line = t.transact("OK", f'STATUS "{mailbox}" (UIDVALIDITY)')[0]
    return int(re.search(rb"UIDVALIDITY (\d+)", line).group(1))


def append(t: Transcript, mailbox: str, data: bytes, extra: str = "", status: str = "OK",
           plus: bool = False) -> list[bytes]:
    """APPEND with a synchronizing literal (waiting for "+") or LITERAL+ (`plus`)."""
    t.n += 1
    tag = f"t{t.n}".encode()
    head = f'{tag.decode()} APPEND "{mailbox}"{" " + extra if extra else ""} {{{len(data)}{"+" if plus else ""}}}'
    t.send(head.encode() + b"\r\n")
    lines = []
    if not plus:
        cont = t.readline()
        assert cont == b"+ Ready for literal data", cont
    t.send(data + b"\r\n")
    while True:
        line = t.readline()
        lines.append(line)
        if line.startswith(tag + b" "):
            assert line.split(b" ")[1].decode() == status, lines
            return lines


def seed(t: Transcript, count: int, mailbox: str = "INBOX") -> list[bytes]:
    """`count` small messages appended to `mailbox`; returns their bytes."""
    out = []
    for i in range(count):
        raw = message(ANNA, JOBCENTER, f"Besked {i + 1}", body=f"Tekst {i + 1}\r\n")
        append(t, mailbox, raw)
        out.append(raw)
    return out


def test_append_with_flags_and_date_is_stored_byte_exact(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    v = uidvalidity(t, "Drafts")
    raw = message(ANNA, JOBCENTER, "Kladde")
    lines = append(t, "Drafts", raw, '(\\Draft $Kladde \\seen) "05-Nov-2026 13:14:15 +0100"')
    assert lines == [f"t{t.n} OK [APPENDUID {v} 1] APPEND completed".encode()]
    lines = append(t, "Drafts", raw, "()", plus=True)       # LITERAL+: no continuation
    assert lines == [f"t{t.n} OK [APPENDUID {v} 2] APPEND completed".encode()]
    t.transact("OK", "SELECT Drafts")
    lines = t.transact("OK", "FETCH 1:2 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert lines[0] == (b'* 1 FETCH (FLAGS (\\Draft \\Seen $Kladde) INTERNALDATE "05-Nov-2026 12:14:15 +0000" '
                        b"RFC822.SIZE %d BODY[] {%d}\r\n" % (len(raw), len(raw)) + raw + b")")
    assert lines[1].startswith(b"* 2 FETCH (FLAGS () INTERNALDATE ")
    lines = t.transact("OK", "FETCH 1 (ENVELOPE)")
    assert b'"Kladde"' in lines[0]


def test_append_records_a_message_of_the_account(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    append(t, "INBOX", message(ANNA, JOBCENTER, "Egen", message_id="<egen-1@client.test>"))
    with bridge.store.ro() as s:
        msg = s.scalars(select(m.Message).where(m.Message.message_id == "<egen-1@client.test>")).one()
        account = s.scalars(select(m.Account).where(m.Account.login == ANNA)).one()
        assert (msg.origin, msg.sender_account_id, msg.from_address) == ("imap-append", account.id, ANNA)
        content = s.get(m.Content, msg.sha256)
        assert content is not None and content.subject == "Egen"
        assert bridge.app.blobs.get(msg.sha256) == message(ANNA, JOBCENTER, "Egen",
                                                           message_id="<egen-1@client.test>")


def test_append_to_the_selected_mailbox_reports_exists(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT Archive")
    v = uidvalidity(t, "Archive")
    lines = append(t, "Archive", message(ANNA, JOBCENTER, "Ny"))
    assert lines == [b"* 1 EXISTS", f"t{t.n} OK [APPENDUID {v} 1] APPEND completed".encode()]


def test_append_to_a_missing_or_foreign_mailbox_is_trycreate(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    raw = message(ANNA, JOBCENTER)
    missing = append(t, "Nowhere", raw, status="NO")[-1]
    foreign = append(t, "Shared/jobcenter/INBOX", raw, status="NO")[-1]
    assert REF.sub(b"", missing).split(b" ", 1)[1] == b"NO [TRYCREATE] no such mailbox"
    assert REF.sub(b"", foreign).split(b" ", 1)[1] == b"NO [TRYCREATE] no such mailbox"
    t.transact("OK", "NOOP")


def test_append_syntax_errors_are_bad(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    raw = message(ANNA, JOBCENTER)
    for extra in ("(\\Bogus)", "(\\Recent)", "(\\*)", '("quoted")', '(\\Seen) "31-Feb-2026 10:00:00 +0000"',
                  '"yesterday"', "(\\Seen"):
        line = append(t, "INBOX", raw, extra, status="BAD", plus=True)[-1]
        assert REF.search(line), line
    t.transact("BAD", "APPEND INBOX")                          # no message
    line = append(t, "INBOX", b"no header here\r\n", status="NO")[-1]
    assert REF.sub(b"", line).split(b" ", 1)[1] == \
        b"NO [CANNOT] the message is not a well-formed RFC 5322 message"
    t.transact("OK", "SELECT INBOX")
    assert t.transact("OK", "FETCH 1:* (UID)") == [f"t{t.n} OK FETCH completed".encode()]


def test_append_over_the_limit_is_refused_before_the_continuation(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    t.send(b"a1 APPEND INBOX {4294967296}\r\n")
    line = t.readline()
    assert REF.sub(b"", line) == b"a1 NO [TOOBIG] literal too large"
    t.transact("OK", "NOOP")                                   # the session goes on
    assert b"APPENDLIMIT=" in t.transact("OK", "CAPABILITY")[0]


def test_append_of_the_bridges_own_sent_copy_is_recognised(bridge: RunningBridge, transcript: Opener) -> None:
    """A client's APPEND to Sent of a message it submitted: the bridge already filed it there."""
    raw = message(ANNA, JOBCENTER, "Til jobcentret",
                  message_id="<sendt-1@client.test>")
    with login(bridge, ANNA) as c:
        c.sendmail(ANNA, [JOBCENTER], raw)
    sent = wait_for(lambda: bridge.store.mailbox_entries(ANNA, "Sent"), timeout=5)
    t = transcript(bridge, ANNA)
    v = uidvalidity(t, "Sent")
    lines = append(t, "Sent", raw, "(\\Seen)")
    assert lines == [f"t{t.n} OK [APPENDUID {v} {sent[0]['uid']}] APPEND completed".encode()]
    assert t.transact("OK", 'STATUS "Sent" (MESSAGES)')[0] == b'* STATUS "Sent" (MESSAGES 1)'
    # The same bytes appended to Drafts are the user's own copy: stored.
    lines = append(t, "Drafts", raw)
    assert lines[-1].startswith(f"t{t.n} OK [APPENDUID ".encode())
    with bridge.store.ro() as s:
        origins = s.scalars(select(m.Message.origin).where(m.Message.message_id == "<sendt-1@client.test>")
                            .order_by(m.Message.id)).all()
        assert origins == ["smtp", "imap-append"]


def test_caseworker_appends_to_the_shared_inbox(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, CASEWORKER)
    v = uidvalidity(t, "Shared/jobcenter/INBOX")
    lines = append(t, "Shared/jobcenter/INBOX", message(JOBCENTER, ANNA_CPR_ADDR, "Notat"))
    assert lines == [f"t{t.n} OK [APPENDUID {v} 1] APPEND completed".encode()]


def test_append_to_sent_before_the_bridge_filed_its_copy_files_that_copy(bridge: RunningBridge,
                                                                         transcript: Opener) -> None:
    """The client's APPEND to Sent may arrive before the delivery worker filed the Sent copy:
    the pending "sent" job is taken over and its copy filed, once."""
    raw = message(ANNA, JOBCENTER, "Hurtig", message_id="<hurtig-1@client.test>")
    sha = bridge.app.blobs.put(raw)
    info = analyze(raw)
    now = dt.datetime.now(dt.timezone.utc)
    with bridge.store.tx() as s:
        account = s.scalars(select(m.Account).where(m.Account.login == ANNA)).one()
        if s.get(m.Content, sha) is None:
            s.add(m.Content(sha256=sha, size=info.size, header_size=info.header_size, subject=info.subject,
                            envelope=info.envelope, body=info.body, created_at=now))
        msg = m.Message(uuid=str(uuid.uuid4()), tenant_id=account.tenant_id, message_id="<hurtig-1@client.test>",
                        thread_id=str(uuid.uuid4()), sender_account_id=account.id,
                        sender_party_id=account.party_id, from_address=ANNA, subject="Hurtig", sha256=sha,
                        size=len(raw), internal_date=now, origin="smtp", state="accepted")
        s.add(msg)
        s.flush()
        s.add(m.DeliveryJob(message_id=msg.id, kind="sent", recipient=ANNA, account_id=account.id,
                            next_attempt_at=now + dt.timedelta(hours=1), created_at=now))   # not yet claimed
        msg_pk = msg.id
    assert hashlib.sha256(raw).hexdigest() == sha
    t = transcript(bridge, ANNA)
    v = uidvalidity(t, "Sent")
    assert append(t, "Sent", raw, "(\\Seen)") == [f"t{t.n} OK [APPENDUID {v} 1] APPEND completed".encode()]
    assert append(t, "Sent", raw) == [f"t{t.n} OK [APPENDUID {v} 1] APPEND completed".encode()]
    assert t.transact("OK", 'STATUS "Sent" (MESSAGES)')[0] == b'* STATUS "Sent" (MESSAGES 1)'
    with bridge.store.ro() as s:
        job = s.scalars(select(m.DeliveryJob).where(m.DeliveryJob.message_id == msg_pk)).one()
        assert job.state == "done"
        assert s.get(m.Message, msg_pk).state == "delivered"
        assert s.scalars(select(m.MailboxEntry.message_id).join(
            m.Mailbox, m.Mailbox.id == m.MailboxEntry.mailbox_id).where(
            m.Mailbox.account_id == job.account_id, m.Mailbox.name == "Sent")).all() == [msg_pk]
        message_uuid = s.get(m.Message, msg_pk).uuid
    # The copy filed for the APPEND has its "delivered" event, once, in a chain that verifies.
    events = [e for e in bridge.store.audit_events(message_uuid=message_uuid) if e["kind"] == "delivered"]
    assert [(e["chain"], e["result"], e["actor"], e["subject"], e["protocol"], e["details"]["mailbox"])
            for e in events] == [("borger", "ok", ANNA, ANNA, "imap", "Sent")]
    assert verify_chain(bridge.store.audit_events("borger"), bridge.store.audit_heads()["borger"]) is None


def test_a_draft_appended_first_does_not_swallow_the_submission(bridge: RunningBridge, transcript: Opener) -> None:
    """Submission dedup (same account, same Message-ID) must not take an APPENDed draft for
    an earlier submission: the message is sent and filed in Sent."""
    raw = message(ANNA, JOBCENTER, "Kladde sendt", message_id="<kladde-1@client.test>")
    t = transcript(bridge, ANNA)
    append(t, "Drafts", raw, "(\\Draft)")
    with login(bridge, ANNA) as c:
        c.sendmail(ANNA, [JOBCENTER], raw)
    sent = wait_for(lambda: bridge.store.mailbox_entries(ANNA, "Sent"), timeout=5)
    assert len(sent) == 1

"""SMTP smuggling (CVE-2023-51764 class; aiosmtpd CVE-2024-27305): an end-of-data sequence
other than CRLF "." CRLF inside DATA must not end the message, so a second transaction
hidden behind it never runs.  The bridge goes further and refuses any message with a
bare CR or LF (554 5.6.0).  Bytes are sent raw over the TLS socket after AUTH.
Runs on SQLite and PostgreSQL.  Acceptance point 7.
"""

from __future__ import annotations


from tests.conftest import ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.smtp import expect, login, message


# What a server that ends DATA too early would take for end-of-data.
FAKE_ENDS = {"LF.LF": b"\n.\n", "LF.CRLF": b"\n.\r\n", "CRLF.LF": b"\r\n.\n", "CR.CRLF": b"\r.\r\n"}


def smuggling(fake_end: bytes) -> bytes:
    """A letter with a second, forged transaction hidden behind `fake_end`."""
    first = message(JOBCENTER, ANNA_CPR_ADDR, "Innocent letter")
    forged = message(JOBCENTER, ANNA_CPR_ADDR, "Smuggled letter")
    return (first.rstrip(b"\r\n") + fake_end
            + f"MAIL FROM:<{JOBCENTER}>\r\nRCPT TO:<{ANNA_CPR_ADDR}>\r\nDATA\r\n".encode()
            + forged + b".\r\n")


def accepted_events(bridge: RunningBridge) -> list[dict]:
    return [e for e in bridge.store.audit_events() if e["kind"] == "submit.accepted"]


def stored_messages(bridge: RunningBridge) -> int:
    """Messages submitted (receipts the bridge issued are messages too, but not counted)."""
    from sqlalchemy import func, select

    from bridge.store import models as m
    with bridge.store.ro() as s:
        return s.scalar(select(func.count()).select_from(m.Message).where(m.Message.origin != "receipt"))


def test_smuggled_transaction_never_runs(bridge: RunningBridge) -> None:
    with login(bridge, CASEWORKER) as c:
        for name, fake_end in FAKE_ENDS.items():
            expect(c.mail(JOBCENTER), 250, "2.1.0")
            expect(c.rcpt(ANNA_CPR_ADDR), 250, "2.1.5")
            c.putcmd("DATA")
            assert c.getreply()[0] == 354
            c.send(smuggling(fake_end))                 # exact bytes: no dot-stuffing, no EOL fixing
            # One reply for the one DATA: it was all one message, refused for its bare CR or LF.
            text = expect(c.getreply(), 554, "5.6.0")
            assert "bare CR or LF" in text, name
            # The next reply answers our own next command; none is left over from a forged one.
            assert c.noop() == (250, b"2.0.0 OK"), name
            assert accepted_events(bridge) == [] and stored_messages(bridge) == 0, name
    rejected = [e for e in bridge.store.audit_events("kommune") if e["kind"] == "submit.rejected"]
    assert len(rejected) == len(FAKE_ENDS)


def test_only_crlf_dot_crlf_ends_data_and_pipelining_still_works(bridge: RunningBridge) -> None:
    # The legitimate neighbour of the attack: dot-stuffed lines (RFC 5321 section 4.5.2) are
    # content, CRLF "." CRLF ends DATA, and commands pipelined after it (RFC 2920) are a second,
    # fully checked transaction of the same authenticated client.
    dotted = "line one\r\n.\r\n. not the end\r\n..\r\nlast\r\n"
    first = message(JOBCENTER, ANNA_CPR_ADDR, "First", body=dotted)
    stuffed = first.replace(b"\r\n.", b"\r\n..")
    envelope = f"MAIL FROM:<{JOBCENTER}>\r\nRCPT TO:<{ANNA_CPR_ADDR}>\r\nDATA\r\n".encode()
    with login(bridge, CASEWORKER) as c:
        c.send(envelope)
        assert [c.getreply()[0] for _ in range(3)] == [250, 250, 354]
        c.send(stuffed + b".\r\n" + envelope)
        expect(c.getreply(), 250, "2.0.0")
        assert [c.getreply()[0] for _ in range(3)] == [250, 250, 354]
        c.send(message(JOBCENTER, ANNA_CPR_ADDR, "Second") + b".\r\n")
        expect(c.getreply(), 250, "2.0.0")
        expect(c.noop(), 250, "2.0.0")
    events = accepted_events(bridge)
    assert len(events) == 2 and stored_messages(bridge) == 2
    assert bridge.app.blobs.get(events[0]["details"]["sha256"]) == first

"""Submission end to end: the demo's caseworker, law firm and citizen over real SMTP+TLS.

Runs on SQLite and PostgreSQL (the `db` fixture).  Acceptance points 2-5 of
the foundation issue.
"""

from __future__ import annotations

import smtplib

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, LAWYER, RunningBridge
from tests.helpers.smtp import connect, login, message, send, wait_for


def blob(bridge: RunningBridge, sha: str) -> bytes:
    return bridge.app.blobs.get(sha)


def inbox(bridge: RunningBridge, owner: str, mailbox: str = "INBOX") -> list[dict]:
    return bridge.store.mailbox_entries(owner, mailbox)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_caseworker_letter_reaches_anna_without_her_cpr(bridge: RunningBridge, implicit: bool) -> None:
    with login(bridge, CASEWORKER, implicit=implicit) as c:
        uid = send(c, JOBCENTER, ANNA_CPR_ADDR,
                   message(f"Jobcenter <{JOBCENTER}>", f"<{ANNA_CPR_ADDR}>", "Indkaldelse til samtale"))
    entries = wait_for(lambda: inbox(bridge, ANNA), timeout=2)
    assert [e["message_uuid"] for e in entries] == [uid]
    seen = blob(bridge, entries[0]["sha256"])
    header = seen.split(b"\r\n\r\n", 1)[0]
    assert b"From: Jobcenter <jobcenter@kommune.dp2.test>" in header
    assert b"\r\nTo: anna@borger.dp2.test\r\n" in header
    assert b"0101701234" not in seen
    assert b"Authentication-Results: localhost;" in header
    # The accepted original keeps what the caseworker wrote; Anna's copy differs only in its header.
    original = blob(bridge, entries[0]["accepted_sha256"])
    assert original.split(b"\r\n\r\n", 1)[1] == seen.split(b"\r\n\r\n", 1)[1]
    sent = wait_for(lambda: inbox(bridge, CASEWORKER, "Sent"))
    assert [e["message_uuid"] for e in sent] == [uid] and sent[0]["sha256"] == entries[0]["accepted_sha256"]


def test_anna_reply_lands_in_shared_inbox_threaded_and_once_in_sent(bridge: RunningBridge) -> None:
    with login(bridge, CASEWORKER) as c:
        letter = send(c, JOBCENTER, ANNA_CPR_ADDR,
                      message(JOBCENTER, ANNA_CPR_ADDR, "Brev", message_id="<letter-1@kommune.test>"))
    wait_for(lambda: inbox(bridge, ANNA))
    with login(bridge, ANNA) as c:
        reply = send(c, ANNA, JOBCENTER, message(
            ANNA, JOBCENTER, "Re: Brev", extra="In-Reply-To: <letter-1@kommune.test>\r\n"
                                              "References: <letter-1@kommune.test>\r\n"))
    shared = wait_for(lambda: inbox(bridge, JOBCENTER))
    assert [e["message_uuid"] for e in shared] == [reply]
    letter_thread = bridge.store.message(letter)["thread_id"]
    assert shared[0]["thread_id"] == letter_thread
    wait_for(lambda: inbox(bridge, ANNA, "Sent"))
    assert [e["message_uuid"] for e in inbox(bridge, ANNA, "Sent")] == [reply]
    # The authority sees who wrote: the citizen's party is stated to it.
    assert b"(cpr:0101701234)" in blob(bridge, shared[0]["sha256"])


def test_law_firm_writes_to_jobcenter_and_gets_an_answer(bridge: RunningBridge) -> None:
    with login(bridge, LAWYER) as c:
        send(c, LAWYER, JOBCENTER, message(LAWYER, JOBCENTER, "Klient", message_id="<q@advokat.test>"))
    wait_for(lambda: inbox(bridge, JOBCENTER))
    with login(bridge, CASEWORKER) as c:
        answer = send(c, JOBCENTER, LAWYER, message(JOBCENTER, LAWYER, "Re: Klient",
                                                    extra="In-Reply-To: <q@advokat.test>\r\n"))
    got = wait_for(lambda: inbox(bridge, LAWYER))
    assert [e["message_uuid"] for e in got] == [answer]


def expect_rcpt_refused(client: smtplib.SMTP, sender: str, rcpt: str, code: int, enhanced: bytes) -> bytes:
    assert client.mail(sender)[0] == 250
    got, reply = client.rcpt(rcpt)
    client.rset()
    assert (got, reply[:len(enhanced)]) == (code, enhanced), reply
    assert b"(ref " in reply
    return reply


def test_cpr_addressing_refused_for_law_firm_and_citizen(bridge: RunningBridge) -> None:
    with login(bridge, LAWYER) as c:
        expect_rcpt_refused(c, LAWYER, ANNA_CPR_ADDR, 550, b"5.7.1")
    with login(bridge, ANNA) as c:
        # Another citizen's CPR, existing or not: the same refusal, so nothing can be probed.
        r1 = expect_rcpt_refused(c, ANNA, "0202802345@cpr.dp2.test", 550, b"5.7.1")
        r2 = expect_rcpt_refused(c, ANNA, "0101701234@cpr.dp2.test", 550, b"5.7.1")
        assert r1.split(b"(ref")[0] == r2.split(b"(ref")[0]
        expect_rcpt_refused(c, ANNA, "anna2@borger.dp2.test", 550, b"5.7.1")
        # Staff she has no letter from: the same answer whether the login exists or not.
        r3 = expect_rcpt_refused(c, ANNA, CASEWORKER, 550, b"5.1.1")
        r4 = expect_rcpt_refused(c, ANNA, "nobody@kommune.dp2.test", 550, b"5.1.1")
        assert r3.split(b"(ref")[0] == r4.split(b"(ref")[0]
    with login(bridge, LAWYER) as c:
        r5 = expect_rcpt_refused(c, LAWYER, CASEWORKER, 550, b"5.1.1")
        r6 = expect_rcpt_refused(c, LAWYER, "nobody@kommune.dp2.test", 550, b"5.1.1")
        assert r5.split(b"(ref")[0] == r6.split(b"(ref")[0]


def test_unknown_recipient_refused_at_rcpt(bridge: RunningBridge) -> None:
    with login(bridge, CASEWORKER) as c:
        expect_rcpt_refused(c, JOBCENTER, "nobody@kommune.dp2.test", 550, b"5.1.1")
        expect_rcpt_refused(c, JOBCENTER, "9999999999@cpr.dp2.test", 550, b"5.1.1")
        expect_rcpt_refused(c, JOBCENTER, "someone@gmail.example", 550, b"5.1.2")
    assert not inbox(bridge, JOBCENTER)


def test_refusals_are_audited(bridge: RunningBridge) -> None:
    with login(bridge, LAWYER) as c:
        expect_rcpt_refused(c, LAWYER, ANNA_CPR_ADDR, 550, b"5.7.1")
    events = [e for e in bridge.store.audit_events("advokat") if e["kind"] == "submit.rejected"]
    assert events and events[-1]["subject"] == ANNA_CPR_ADDR and events[-1]["result"] == "refused"


def test_same_message_id_resubmitted_is_accepted_once(bridge: RunningBridge) -> None:
    raw = message(JOBCENTER, ANNA_CPR_ADDR, message_id="<retry-1@kommune.test>")
    with login(bridge, CASEWORKER) as c:
        first = send(c, JOBCENTER, ANNA_CPR_ADDR, raw)
        second = send(c, JOBCENTER, ANNA_CPR_ADDR, raw)
    assert first == second
    wait_for(lambda: inbox(bridge, ANNA))
    wait_for(lambda: bridge.store.pending_jobs() == 0)
    assert len(inbox(bridge, ANNA)) == 1


def test_message_without_message_id_gets_one(bridge: RunningBridge) -> None:
    raw = (f"From: {JOBCENTER}\r\nTo: {ANNA_CPR_ADDR}\r\nSubject: no id\r\n\r\nbody\r\n").encode()
    with login(bridge, CASEWORKER) as c:
        uid = send(c, JOBCENTER, ANNA_CPR_ADDR, raw)
    stored = bridge.store.message(uid)
    assert stored["message_id"].startswith("<") and stored["message_id"].endswith("@localhost>")
    original = blob(bridge, stored["sha256"])
    assert original.startswith(b"Message-ID: ") and b"\r\nDate: " in original
    assert original.endswith(raw)


def test_mail_before_auth_and_auth_before_tls_refused(bridge: RunningBridge) -> None:
    with connect(bridge) as c:
        code, reply = c.mail(CASEWORKER)
        assert (code, reply[:5]) == (530, b"5.7.0") and b"(ref " in reply
    plain = smtplib.SMTP("localhost", bridge.smtp_port, timeout=10)
    try:
        plain.ehlo("client.test")
        assert "auth" not in plain.esmtp_features
        code, reply = plain.docmd("AUTH", "PLAIN AHVzZXIAcGFzcw==")
        assert code == 530 and reply.startswith(b"5.7.0")
        code, reply = plain.docmd("MAIL", f"FROM:<{CASEWORKER}>")
        assert code == 530
    finally:
        plain.close()


def test_ehlo_announces_size_and_enhanced_status_codes(bridge: RunningBridge) -> None:
    with connect(bridge) as c:
        assert c.esmtp_features["size"] == str(32 * 1024 * 1024)
        assert "enhancedstatuscodes" in c.esmtp_features
        assert c.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    with connect(bridge, implicit=True) as c:
        assert c.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        assert "starttls" not in c.esmtp_features

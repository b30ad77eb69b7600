"""Sender spoofing over real SMTP+TLS: envelope, header From, SASL authzid, and order of steps.

Every refusal is `550 5.7.1` (or `535 5.7.1` for the authzid, `530 5.7.0` for a
command before AUTH or TLS), ends with `(ref S)`, stores nothing and leaves a
`submit.rejected` audit event.  Runs on SQLite and PostgreSQL.  Acceptance point 5.
"""

from __future__ import annotations

import smtplib
from base64 import b64encode

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, LAWYER, PASSWORDS, RunningBridge
from tests.helpers.smtp import connect, data_reply, expect, login, message, tls_context


def plain(authzid: str, login: str, password: str) -> str:
    return "PLAIN " + b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


def accepted(bridge: RunningBridge) -> list[dict]:
    return [e for e in bridge.store.audit_events() if e["kind"] == "submit.accepted"]


def rejected(bridge: RunningBridge, chain: str) -> list[dict]:
    return [e for e in bridge.store.audit_events(chain) if e["kind"] == "submit.rejected"]


def test_envelope_sender_not_hers_refused_at_mail(bridge: RunningBridge) -> None:
    with login(bridge, ANNA) as c:
        for spoofed in (JOBCENTER, CASEWORKER, "anna@borger.dp2.test.evil.example", "ANNA2@borger.dp2.test"):
            expect(c.mail(spoofed), 550, "5.7.1")
            # Nothing half-open remains: RCPT needs a new MAIL.
            expect(c.rcpt(JOBCENTER), 503, "5.5.1")
        expect(c.mail(ANNA.upper()), 250, "2.1.0")          # her own address, in any case
    with login(bridge, LAWYER) as c:
        expect(c.mail(JOBCENTER), 550, "5.7.1")             # another tenant's contact point
    subjects = [e["subject"] for e in rejected(bridge, "borger")]
    assert JOBCENTER in subjects and CASEWORKER in subjects
    assert not accepted(bridge)


def test_header_from_not_hers_refused_after_data(bridge: RunningBridge) -> None:
    cases = {
        "another account's contact point": f"From: Jobcenter <{JOBCENTER}>\r\n",
        "her address only as display name": f'From: "{ANNA}" <{JOBCENTER}>\r\n',
        "two From headers, both hers": f"From: {ANNA}\r\nFrom: Anna <{ANNA}>\r\n",
        "two addresses in one From": f"From: {ANNA}, {JOBCENTER}\r\n",
        "two addresses, both hers": f"From: {ANNA}, Anna <{ANNA}>\r\n",
        "no From at all": "",
    }
    with login(bridge, ANNA) as c:
        for case, from_lines in cases.items():
            raw = (f"{from_lines}To: {JOBCENTER}\r\nSubject: {case}\r\nMessage-ID: <{len(case)}@x.test>\r\n"
                   f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n").encode()
            expect(c.mail(ANNA), 250, "2.1.0")
            expect(c.rcpt(JOBCENTER), 250, "2.1.5")
            text = expect(data_reply(c, raw), 550, "5.7.1")
            assert "From" in text, (case, text)
        # The connection stays usable, and the honest message goes through.
        expect(c.mail(ANNA), 250, "2.1.0")
        expect(c.rcpt(JOBCENTER), 250, "2.1.5")
        expect(data_reply(c, message(f"Anna <{ANNA}>", JOBCENTER)), 250, "2.0.0")
    assert len(accepted(bridge)) == 1
    assert len(rejected(bridge, "borger")) == len(cases)


def test_staff_may_use_a_granted_contact_point_in_from_but_no_other(bridge: RunningBridge) -> None:
    # Granted addresses are fine in either place; an ungranted one in the header is not.
    with login(bridge, CASEWORKER) as c:
        expect(c.mail(CASEWORKER), 250, "2.1.0")
        expect(c.rcpt(ANNA_CPR_ADDR), 250, "2.1.5")
        expect(data_reply(c, message(JOBCENTER, ANNA_CPR_ADDR)), 250, "2.0.0")
        expect(c.mail(CASEWORKER), 250, "2.1.0")
        expect(c.rcpt(ANNA_CPR_ADDR), 250, "2.1.5")
        expect(data_reply(c, message("borgerservice@kommune.dp2.test", ANNA_CPR_ADDR)), 550, "5.7.1")
    assert len(accepted(bridge)) == 1


def test_authzid_of_another_account_refused(bridge: RunningBridge) -> None:
    with connect(bridge) as c:
        # Anna's own, correct password, but asking to act as the caseworker.
        expect(c.docmd("AUTH", plain(CASEWORKER, ANNA, PASSWORDS[ANNA])), 535, "5.7.1")
        expect(c.mail(CASEWORKER), 530, "5.7.0")            # not authenticated as anyone
        expect(c.docmd("AUTH", plain(ANNA.upper(), ANNA, PASSWORDS[ANNA])), 235, "2.7.0")
        expect(c.mail(ANNA), 250, "2.1.0")
    with connect(bridge, implicit=True) as c:
        expect(c.docmd("AUTH", plain(ANNA, ANNA, PASSWORDS[ANNA])), 235, "2.7.0")
    logins = [e for e in bridge.store.audit_events() if e["kind"] == "login"]
    assert [e["result"] for e in logins] == ["fail", "ok", "ok"]
    assert logins[0]["details"]["reason"] == "authzid differs"


def test_commands_before_auth_refused_on_both_listeners(bridge: RunningBridge) -> None:
    for implicit in (False, True):
        with connect(bridge, implicit=implicit) as c:
            for reply in (c.mail(ANNA), c.rcpt(JOBCENTER), c.docmd("DATA")):
                expect(reply, 530, "5.7.0")
            # A failed login does not open the door either.
            expect(c.docmd("AUTH", plain("", ANNA, "wrong")), 535, "5.7.8")
            expect(c.mail(ANNA), 530, "5.7.0")
    assert not accepted(bridge)


def test_auth_login_before_tls_refused_and_credentials_never_checked(bridge: RunningBridge) -> None:
    client = smtplib.SMTP("localhost", bridge.smtp_port, timeout=10)
    try:
        client.ehlo("client.test")
        expect(client.docmd("AUTH", "LOGIN " + b64encode(ANNA.encode()).decode()), 530, "5.7.0")
        # The password line that a vulnerable server would have read is just a bad command.
        expect(client.docmd(b64encode(PASSWORDS[ANNA].encode()).decode()), 530, "5.7.0")
        expect(client.docmd("AUTH", plain("", ANNA, PASSWORDS[ANNA])), 530, "5.7.0")
        # After STARTTLS nothing from before counts: still not authenticated.
        client.starttls(context=tls_context(bridge))
        client.ehlo("client.test")
        expect(client.mail(ANNA), 530, "5.7.0")
    finally:
        client.close()
    assert not [e for e in bridge.store.audit_events() if e["kind"] == "login"]

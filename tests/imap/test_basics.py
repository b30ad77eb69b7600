"""The IMAP server's first steps: TLS, login, LIST, SELECT, FETCH of a delivered letter."""

from __future__ import annotations

import imaplib

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, PASSWORDS, RunningBridge
from tests.helpers.imap import Transcript, imap_client
from tests.helpers.smtp import login, message, wait_for
from tests.imap.conftest import Opener


def deliver_letter(bridge: RunningBridge, subject: str = "Indkaldelse") -> dict:
    with login(bridge, CASEWORKER) as c:
        c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, subject, body="Brevet\r\n"))
    return wait_for(lambda: bridge.store.mailbox_entries(ANNA))[-1]


@pytest.mark.parametrize("implicit", [True, False], ids=["imaps", "starttls"])
def test_anna_reads_her_letter_byte_exact(bridge: RunningBridge, implicit: bool) -> None:
    entry = deliver_letter(bridge)
    stored = bridge.app.blobs.get(entry["sha256"])
    client = imap_client(bridge, ANNA, implicit=implicit)
    try:
        assert client.select("INBOX") == ("OK", [b"1"])
        typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[] ENVELOPE)")
        assert typ == "OK"
        assert data[0][1] == stored
        rest = data[1]                                  # the ENVELOPE follows the literal
        assert b'"Indkaldelse"' in rest and b'"anna" "borger.dp2.test"' in rest
        assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS ())"]        # PEEK leaves it unread
        client.fetch("1", "(BODY[TEXT])")
        assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Seen))"]
    finally:
        client.logout()


def test_login_disabled_before_tls(sqlite_bridge: RunningBridge) -> None:
    client = imaplib.IMAP4("localhost", sqlite_bridge.port("imap-starttls"), timeout=10)
    try:
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(ANNA, PASSWORDS[ANNA])
    finally:
        client.shutdown()


def test_failed_logins_look_the_same(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge)
    wrong = t.transact("NO", f"LOGIN {ANNA} Wrong-password-1")[-1]
    unknown = t.transact("NO", "LOGIN nobody@borger.dp2.test Wrong-password-1")[-1]
    strip = lambda line: line.split(b" ", 1)[1].split(b"(ref")[0]   # noqa: E731
    assert strip(wrong) == strip(unknown) == b"NO [AUTHENTICATIONFAILED] authentication failed "


def test_list_shows_special_use_and_other_names_do_not_exist(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    lines = t.transact("OK", 'LIST "" "*"')
    assert b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"' in lines
    missing = t.transact("NO", "SELECT Nowhere")[-1]
    other = t.transact("NO", 'SELECT "Shared/jobcenter/INBOX"')[-1]
    assert missing.split(b"(ref")[0].split(b" ", 1)[1] == other.split(b"(ref")[0].split(b" ", 1)[1]


def test_caseworker_sees_the_shared_contact_point_inbox(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, CASEWORKER)
    lines = t.transact("OK", 'LIST "" "*"')
    assert any(line.endswith(b'"Shared/jobcenter/INBOX"') for line in lines)
    t.transact("OK", 'SELECT "Shared/jobcenter/INBOX"')


def test_syntax_errors_are_bad_and_unknown_commands_too(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge, ANNA)
    assert t.transact("BAD", "FROB")[-1].endswith(b")")
    t.transact("BAD", "SELECT")
    t.transact("BAD", 'LIST "unterminated')
    t.transact("OK", "NOOP")

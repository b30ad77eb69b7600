"""Mail -> MeMo for ordinary SMTP submissions (issue 6, "mail -> MeMo (any message submitted
over SMTP)"): a lawyer's Outlook message read as MeMo by the kommune's case system over the
HTTP API, the thread as ReplyData naming stored UUIDs both ways, X-MeMo-* fields checked at
DATA and acting like a system's MeMo (keywords, delayed delivery), what only an authority
may send, and who may read which message."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import uuid as uuidlib
from email.message import EmailMessage
from typing import Any

import pytest

from bridge.digitalpost import parse_memo, validate, write_memo
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, LAWYER, RunningBridge
from tests.helpers.imap import imap_client
from tests.helpers.memo import full_memo
from tests.helpers.smtp import login, send, settled, wait_for
from tests.protocol.test_httpapi import SYSTEM, add_token, assert_problem, cli, client, post_memo

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + bytes(range(256))


@pytest.fixture
def system(bridge: RunningBridge) -> RunningBridge:
    cli(bridge, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
    return bridge


def lawyer_letter() -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Advokat Demo <{LAWYER}>"
    msg["To"] = JOBCENTER
    msg["Subject"] = "Partshøring i sag om Anna"
    msg["Message-ID"] = f"<{uuidlib.uuid4()}@outlook.test>"
    msg["X-MeMo-Content-Data-Case-ID-Case-ID"] = "SAG-2026-77"
    msg["X-MeMo-Content-Data-Case-ID-Case-System"] = "Advokatsystem"
    msg.set_content("Kære Jobcenter\n\nVedlagt vores bemærkninger.\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="bemaerkninger.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def get_memo(c: Any, message_uuid: str, **params: str) -> Any:
    r = c.get(f"/v1/messages/{message_uuid}/memo", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/xml")
    assert validate(r.content) == []
    return parse_memo(r.content)


def test_a_lawyers_outlook_letter_is_read_as_memo_by_the_kommunes_system(system: RunningBridge) -> None:
    with login(system, LAWYER) as smtp:
        letter_uuid = send(smtp, LAWYER, JOBCENTER, lawyer_letter())
    settled(system)
    with client(system, add_token(system, SYSTEM)) as kommune:
        memo = get_memo(kommune, letter_uuid)
        as_1_1 = kommune.get(f"/v1/messages/{letter_uuid}/memo", params={"version": "1.1"})
        assert as_1_1.status_code == 200 and validate(as_1_1.content, "1.1") == []
    h = memo.message_header
    assert h.message_uuid == letter_uuid and h.label == "Partshøring i sag om Anna"
    assert (h.sender.sender_id, h.sender.id_type) == ("30000000", "CVR")        # the law firm
    assert (h.recipient.recipient_id, h.recipient.id_type) == ("29190000", "CVR")  # the kommune
    assert h.recipient.contact_point.contact_point_id == JOBCENTER
    assert (h.content_data.case_id.case_id, h.content_data.case_id.case_system) == ("SAG-2026-77", "Advokatsystem")
    files = [f for d in memo.message_body.additional_documents for f in d.files]
    assert [(f.encoding_format, f.filename, f.content) for f in files] == \
        [("application/pdf", "bemaerkninger.pdf", PDF)]                          # byte-exact
    main = memo.message_body.main_document.files
    assert main[0].encoding_format == "text/plain" and b"Vedlagt vores" in main[0].content

    # The sender's side reads it too; a tenant that is neither end may not.
    with client(system, add_token(system, LAWYER)) as lawyer:
        assert get_memo(lawyer, letter_uuid).message_header.message_uuid == letter_uuid
    with client(system, add_token(system, ANNA)) as anna:
        assert_problem(anna.get(f"/v1/messages/{letter_uuid}/memo"), 403)
        assert_problem(anna.get(f"/v1/messages/{uuidlib.uuid4()}/memo"), 404)


def test_the_thread_maps_to_stored_uuids_both_ways(system: RunningBridge) -> None:
    # The kommune's system writes to Anna (MeMo); Anna answers from her mail client.
    msg = full_memo()
    h = dataclasses.replace(msg.message_header, message_uuid=str(uuidlib.uuid4()), reply_data=(),
                            do_not_deliver_until_date=None, mandatory=False, legal_notification=False,
                            recipient=dataclasses.replace(msg.message_header.recipient,
                                                          recipient_id="0101701234", id_type="CPR"))
    first = write_memo(dataclasses.replace(msg, message_header=h), "1.2")
    token = add_token(system, SYSTEM)
    with client(system, token) as kommune:
        r = post_memo(kommune, first)
        assert r.status_code == 201, r.text
        letter_uuid = r.json()["uuid"]
    wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)
    letter_mid = _fetch_header(system, ANNA, 1, "Message-ID")

    reply = EmailMessage()
    reply["From"], reply["To"] = ANNA, JOBCENTER
    reply["Subject"] = "Re: " + h.label
    reply["Message-ID"] = f"<{uuidlib.uuid4()}@thunderbird.test>"
    reply["In-Reply-To"] = letter_mid
    reply["References"] = letter_mid
    reply.set_content("Tak, jeg kommer.\n")
    with login(system, ANNA) as smtp:
        reply_uuid = send(smtp, ANNA, JOBCENTER, reply.as_bytes(policy=email.policy.SMTP))
    settled(system)

    with client(system, token) as kommune:
        read = get_memo(kommune, reply_uuid).message_header
        assert [(r.message_id, r.message_uuid) for r in read.reply_data] == [(letter_mid, letter_uuid)]
        assert (read.sender.sender_id, read.sender.id_type) == ("0101701234", "CPR")   # authority sees it

        # The system answers Anna's reply naming it by UUID only: her client threads it.
        answer = dataclasses.replace(h, message_uuid=str(uuidlib.uuid4()), label="Svar på din besked",
                                     reply_data=(dataclasses.replace(full_memo().message_header.reply_data[0],
                                                                     message_id=None, message_uuid=reply_uuid),))
        r = post_memo(kommune, write_memo(dataclasses.replace(msg, message_header=answer), "1.2"))
        assert r.status_code == 201, r.text
    wait_for(lambda: len(system.store.mailbox_entries(ANNA)) >= 2, timeout=10)
    reply_mid = reply["Message-ID"]
    assert _fetch_header(system, ANNA, 2, "In-Reply-To") == reply_mid


def test_memo_fields_in_a_mail_act_as_in_a_memo_and_are_checked_at_data(system: RunningBridge) -> None:
    from tests.helpers.smtp import message
    marked = message(CASEWORKER, ANNA_CPR_ADDR, "Afgørelse",
                     extra="X-MeMo-Mandatory: true\r\nX-MeMo-Legal-Notification: true\r\n")
    with login(system, CASEWORKER) as smtp:
        send(smtp, CASEWORKER, ANNA_CPR_ADDR, marked)
        # A value that is not a MeMo boolean: refused at DATA, naming the element.
        smtp.mail(CASEWORKER)
        smtp.rcpt(ANNA_CPR_ADDR)
        code, text = smtp.data(message(CASEWORKER, ANNA_CPR_ADDR, "x", extra="X-MeMo-Mandatory: maybe\r\n"))
        assert code == 554 and text.startswith(b"5.6.0 "), text
        assert b"memo:mandatory" in text and b"X-MeMo" in text and b"Traceback" not in text
        # A later delivery date holds the copy, like doNotDeliverUntilDate in a system's MeMo.
        held_uuid = send(smtp, CASEWORKER, ANNA_CPR_ADDR, message(
            CASEWORKER, ANNA_CPR_ADDR, "Senere", extra="X-MeMo-Do-Not-Deliver-Until-Date: 2099-01-01\r\n"))
    wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)   # (settled() waits for held ones)
    imap = imap_client(system, ANNA)
    try:
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    finally:
        imap.logout()
    assert typ == "OK"
    shown = [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    assert len(shown) == 1                               # "Senere" is held, the refused one never came
    flags, subject = shown[0]
    assert b"Afg" in subject and b"$Mandatory" in flags and b"$LegalNotice" in flags
    trail = json.loads(cli(system, "trace", held_uuid, "--json"))
    assert "2099-01-01" in json.dumps(trail) or "2098-12-31" in json.dumps(trail)

    # Only an authority may mark post mandatory or a legal notice: the law firm may not.
    with login(system, LAWYER) as smtp:
        smtp.mail(LAWYER)
        smtp.rcpt(JOBCENTER)
        code, text = smtp.data(message(LAWYER, JOBCENTER, "x", extra="X-MeMo-Legal-Notification: true\r\n"))
    assert code == 550 and text.startswith(b"5.7.1 ") and b"authority" in text


def test_a_citizens_token_sees_only_her_own_messages(system: RunningBridge) -> None:
    with login(system, ANNA) as smtp:
        anna_uuid = send(smtp, ANNA, JOBCENTER, _plain(ANNA, JOBCENTER, "Min ansøgning"))
    settled(system)
    cli(system, "account", "add", "bent@borger.dp2.test", "--name", "Bent", "--cpr", "0202801234")
    with client(system, add_token(system, "bent@borger.dp2.test")) as bent:
        for path in ("", "/evidence", "/memo"):
            assert_problem(bent.get(f"/v1/messages/{anna_uuid}{path}"), 403)
    with client(system, add_token(system, ANNA)) as anna:
        assert anna.get(f"/v1/messages/{anna_uuid}").status_code == 200
        memo = get_memo(anna, anna_uuid).message_header
        assert (memo.sender.sender_id, memo.recipient.recipient_id) == ("0101701234", "29190000")


def _plain(sender: str, to: str, subject: str) -> bytes:
    from tests.helpers.smtp import message
    return message(sender, to, subject)


def _fetch_header(bridge: RunningBridge, user: str, seq: int, name: str) -> str:
    imap = imap_client(bridge, user)
    try:
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch(str(seq), f"(BODY.PEEK[HEADER.FIELDS ({name.upper()})])")
    finally:
        imap.logout()
    assert typ == "OK"
    value = email.message_from_bytes(data[0][1], policy=email.policy.default)[name]
    assert value, f"no {name} in message {seq}"
    return str(value).strip()


def test_a_message_to_several_needs_a_recipient_and_each_end_sees_only_its_own_copy(system: RunningBridge) -> None:
    firm = "post@advokat.dp2.test"                                 # the law firm's contact point
    cli(system, "contact-point", "add", firm, "--name", "Advokatpost")
    cli(system, "contact-point", "grant", firm, LAWYER)
    raw = _plain(CASEWORKER, f"{ANNA_CPR_ADDR}, {firm}", "Til to")
    with login(system, CASEWORKER) as smtp:
        smtp.mail(CASEWORKER)
        assert smtp.rcpt(ANNA_CPR_ADDR)[0] == 250 and smtp.rcpt(firm)[0] == 250
        code, reply = smtp.data(raw)
        assert code == 250, reply
        letter_uuid = reply.decode().split()[2]
    settled(system)
    with client(system, add_token(system, SYSTEM)) as kommune:
        doc = assert_problem(kommune.get(f"/v1/messages/{letter_uuid}/memo"), 400)
        assert ANNA_CPR_ADDR in doc["detail"] and firm in doc["detail"]
        to_anna = get_memo(kommune, letter_uuid, recipient=ANNA_CPR_ADDR).message_header
        assert (to_anna.recipient.recipient_id, to_anna.recipient.id_type) == ("0101701234", "CPR")
        assert_problem(kommune.get(f"/v1/messages/{letter_uuid}/memo", params={"recipient": "x@y.test"}), 404)
    with client(system, add_token(system, LAWYER)) as lawyer:     # a recipient: its own copy only
        mine = get_memo(lawyer, letter_uuid).message_header
        assert (mine.recipient.recipient_id, mine.sender.sender_id) == ("30000000", "29190000")
        assert_problem(lawyer.get(f"/v1/messages/{letter_uuid}/memo", params={"recipient": ANNA_CPR_ADDR}), 404)


def test_a_memos_message_uuid_is_the_messages_uuid_and_cannot_be_taken_by_another(system: RunningBridge) -> None:
    msg = full_memo()
    mine = str(uuidlib.uuid4())
    h = dataclasses.replace(msg.message_header, message_uuid=mine, do_not_deliver_until_date=None,
                            recipient=dataclasses.replace(msg.message_header.recipient,
                                                          recipient_id="0101701234", id_type="CPR"))
    memo = write_memo(dataclasses.replace(msg, message_header=h), "1.2")
    with client(system, add_token(system, SYSTEM)) as kommune:
        r = post_memo(kommune, memo)
        assert r.status_code == 201 and r.json()["uuid"] == mine, r.text
        settled(system)
        assert get_memo(kommune, mine).message_header.message_uuid == mine
    cli(system, "account", "add", "system@advokat.dp2.test", "--system", "--name", "Advokatsystem")
    with client(system, add_token(system, "system@advokat.dp2.test")) as firm:
        doc = assert_problem(post_memo(firm, memo), 422)
        assert mine in doc["detail"] and "another message" in doc["detail"]
    assert [e["message_uuid"] for e in system.store.mailbox_entries(ANNA)] == [mine]

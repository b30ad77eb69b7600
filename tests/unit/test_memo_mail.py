"""MeMo <-> mail (bridge.digitalpost.mail): lossless round trips, what a mail client sees, and the
MeMo a plain submitted mail becomes."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import icalendar
import pytest

from bridge.digitalpost import model as m
from bridge.digitalpost.mail import (mail_to_memo, memo_headers, memo_keywords, memo_to_mail)
from bridge.digitalpost.xml import MemoInvalid, parse_memo, validate, write_memo
from tests.helpers.memo import EXAMPLES, PDF, differences, example, full_memo

DATE = datetime(2026, 11, 27, 13, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 28, 8, 30, tzinfo=timezone.utc)
FROM = "Demo Kommune <jobcenter@kommune.dp2.test>"
TO = "Anna Hansen <anna@borger.dp2.test>"
BRIDGE_SENDER = m.Sender(sender_id="0101701234", id_type="CPR", label="Anna Hansen")
BRIDGE_RECIPIENT = m.Recipient(recipient_id="29190000", id_type="CVR", label="Demo Kommune")


def render(msg: m.Message, memo_xml: bytes | None = None) -> bytes:
    return memo_to_mail(msg, memo_xml if memo_xml is not None else write_memo(msg),
                        from_header=FROM, to_header=TO, message_id="<r1@kommune.dp2.test>", date=DATE)


def back(raw: bytes, original: m.Message) -> m.Message:
    """The bridge's view of a rendered MeMo submitted again: identity fields as the original's."""
    header = original.message_header
    return mail_to_memo(raw, sender=header.sender, recipient=header.recipient,
                        message_uuid=header.message_uuid, now=LATER)


def parsed(raw: bytes) -> EmailMessage:
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    return mail


def leaves(mail: EmailMessage) -> list[EmailMessage]:
    return [p for p in mail.walk() if not p.is_multipart()]


def test_full_memo_round_trip_is_equal_field_by_field() -> None:
    original = full_memo()
    raw = render(original)
    result = back(raw, original)
    assert differences(original, result) == []
    assert result == original


@pytest.mark.parametrize("name", EXAMPLES)
def test_reference_example_round_trip(name: str) -> None:
    data = example(name)
    original = parse_memo(data)
    raw = render(original, data)
    assert differences(original, back(raw, original)) == []
    memo_part = next(p for p in leaves(parsed(raw)) if p.get_filename() == "memo.xml")
    assert memo_part.get_content() == data  # the original document, byte for byte


def test_mail_is_7bit_crlf_and_parses_without_defects() -> None:
    raw = render(full_memo())
    assert all(b < 0x80 for b in raw)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    mail = parsed(raw)
    assert all(not part.defects for part in mail.walk())
    assert str(mail["Subject"]) == full_memo().message_header.label
    assert str(mail["From"]) == FROM and str(mail["To"]) == TO
    assert mail["Message-ID"] == "<r1@kommune.dp2.test>"
    memo_part = leaves(mail)[-1]
    assert memo_part.get_content_type() == "application/xml"
    assert memo_part.get_param("name") == "memo.xml"
    assert memo_part.get_content_disposition() == "attachment"
    assert parse_memo(memo_part.get_content()) == full_memo()


def test_attachments_keep_labels_filenames_and_bytes() -> None:
    msg = full_memo()
    mail = parsed(render(msg))
    body = msg.message_body
    assert body is not None
    by_label: dict[str, list[EmailMessage]] = {}
    for part in leaves(mail):
        if part.get_content_disposition() == "attachment" and part.get_filename() != "memo.xml":
            by_label.setdefault(str(part["Content-Description"]), []).append(part)
    for doc in (*body.additional_documents, *body.technical_documents):
        parts = by_label[doc.label or ""]
        assert [p.get_filename() for p in parts] == [f.filename for f in doc.files]
        assert [p.get_content() for p in parts] == [f.content for f in doc.files]
        assert [p.get_content_type() for p in parts] == [f.encoding_format for f in doc.files]


def test_reservation_is_a_calendar_request() -> None:
    msg = full_memo()
    mail = parsed(render(msg))
    calendars = [p for p in leaves(mail) if p.get_content_type() == "text/calendar"]
    body = msg.message_body
    assert body is not None
    reservations = [a.reservation for doc in (body.main_document, *body.additional_documents)
                    for a in doc.actions if a.reservation is not None]
    assert len(calendars) == len(reservations) == 3
    for part, reservation in zip(calendars, reservations):
        assert part.get_param("method") == "REQUEST"
        cal = icalendar.Calendar.from_ical(part.get_content())
        assert str(cal["METHOD"]) == "REQUEST"
        assert cal["PRODID"]
        (event,) = cal.walk("VEVENT")
        assert str(event["UID"]) == reservation.reservation_uuid
        assert event["DTSTART"].dt == reservation.start_date_time
        assert event["DTEND"].dt == reservation.end_date_time
        assert event["DTSTART"].to_ical() == b"20261201T090000Z"  # UTC form
        assert str(event["LOCATION"]) == reservation.location
        assert str(event["SUMMARY"]) == reservation.abstract
        assert str(event["DESCRIPTION"]) == reservation.description
        assert str(event["ORGANIZER"]) == f"mailto:{reservation.organizer_mail}"
        assert event["DTSTAMP"].dt == DATE
        assert str(event["ATTENDEE"]) == "mailto:anna@borger.dp2.test"


def test_entry_points_are_labelled_links_in_text_and_html() -> None:
    msg = full_memo()
    body = msg.message_body
    assert body is not None
    html_file = m.File(encoding_format="text/html", filename="brev.html", language="da",
                       content="<html><body><p>Kære Anna</p></body></html>".encode())
    text_file = m.File(encoding_format="text/plain", filename="brev.txt", language="da",
                       content="Kære Anna\r\n".encode())
    main = dataclasses.replace(body.main_document, files=(text_file, html_file))
    msg = dataclasses.replace(msg, message_body=dataclasses.replace(body, main_document=main))
    mail = parsed(render(msg))
    plain = mail.get_body(preferencelist=("plain",))
    page = mail.get_body(preferencelist=("html",))
    assert plain is not None and page is not None
    assert plain.get_content().startswith("Kære Anna")
    assert "Spørgeskema main: https://selvbetjening.example/main?a=1&b=2" in plain.get_content()
    assert ('Spørgeskema main: <a href="https://selvbetjening.example/main?a=1&amp;b=2">'
            in page.get_content())
    assert page.get_content().index("Spørgeskema") < page.get_content().index("</body>")
    assert differences(msg, back(render(msg), msg)) == []


def test_pdf_main_document_is_an_inline_pdf_part_with_a_note() -> None:
    original = parse_memo(example("example_v1.2_MeMo_Minimum_Example.xml"))
    mail = parsed(render(original))
    pdf = [p for p in leaves(mail) if p.get_content_type() == "application/pdf"]
    assert len(pdf) == 1
    assert pdf[0].get_content_disposition() == "inline"
    assert pdf[0].get_filename() == "Pladsanvisning.pdf"
    assert pdf[0].get_content() == b"This is a test"
    note = mail.get_body(preferencelist=("plain",))
    assert note is not None and "Pladsanvisning.pdf" in note.get_content()


def test_reply_by_header_and_keywords() -> None:
    msg = full_memo()
    mail = parsed(render(msg))
    assert mail["Reply-By"] == "Wed, 30 Dec 2026 12:00:00 +0000"
    assert parsedate_to_datetime(mail["Reply-By"]) == msg.message_header.reply_by_date_time
    assert mail["X-MeMo-Mandatory"] == "true"
    assert mail["X-MeMo-Legal-Notification"] == "true"
    assert memo_keywords(msg) == ["$Mandatory", "$LegalNotice"]
    header = dataclasses.replace(msg.message_header, mandatory=None, legal_notification=False,
                                 reply_by_date_time=None)
    plain = dataclasses.replace(msg, message_header=header)
    assert memo_keywords(plain) == []
    mail = parsed(render(plain))
    assert mail["Reply-By"] is None and mail["X-MeMo-Mandatory"] is None
    assert mail["X-MeMo-Legal-Notification"] == "false"


def test_memo_headers_name_scheme_and_identity_left_out() -> None:
    names = dict(memo_headers(full_memo()))
    assert names["X-MeMo-Content-Data-Case-ID-Case-System"] == "Sagssystem 1234"
    assert names["X-MeMo-Reply-Data-2-Message-UUID"] == "7c9e6679-7425-40de-944b-e07fc1f90ae2"
    assert names["X-MeMo-Reply-By-Date-Time"] == "2026-12-30T12:00:00Z"
    assert names["X-MeMo-Do-Not-Deliver-Until-Date"] == "2026-12-01"
    assert names["X-MeMo-Memo-Version"] == "1.2"
    assert not [n for n in names if n.startswith(("X-MeMo-Sender", "X-MeMo-Recipient", "X-MeMo-Label"))]
    assert "2211771212" not in {v for n, v in names.items() if not n.startswith("X-MeMo-Reply-Data")}


def test_x_memo_headers_alone_give_the_header_fields() -> None:
    """A mail without memo.xml: its X-MeMo-* fields (as memo_to_mail writes them) land in place."""
    original = full_memo()
    mail = parsed(render(original))
    for part in list(mail.iter_parts()):
        if part.get_filename() == "memo.xml":
            mail.get_payload().remove(part)
    result = back(mail.as_bytes(policy=policy.SMTP), original)
    expected = dataclasses.replace(original.message_header, notification=original.message_header.notification)
    assert differences(expected, result.message_header) == []
    assert result.message_body is not None and original.message_body is not None
    assert result.message_body.created_date_time == original.message_body.created_date_time
    # the documents keep kind, grouping, ids, labels, filenames and bytes
    for got, want in zip(result.message_body.additional_documents + result.message_body.technical_documents,
                         original.message_body.additional_documents + original.message_body.technical_documents):
        assert (got.label, [f.content for f in got.files], [f.filename for f in got.files]) == \
            (want.label, [f.content for f in want.files], [f.filename for f in want.files])
    assert validate(write_memo(result)) == []


def plain_mail(extra_headers: str = "") -> bytes:
    return (
        "From: Anna Hansen <anna@borger.dp2.test>\r\n"
        "To: jobcenter@kommune.dp2.test\r\n"
        "Subject: =?utf-8?q?Sv=C3=A6r_p=C3=A5_brev?= " + "x" * 300 + "\r\n"
        "Date: Fri, 27 Nov 2026 14:00:00 +0100\r\n"
        "Message-ID: <m2@borger.dp2.test>\r\n"
        "In-Reply-To: <8c2ea15d-61fb-4ba9-9366-42f8b194c114@kommune.dp2.test>\r\n"
        "References: <first@kommune.dp2.test> <8c2ea15d-61fb-4ba9-9366-42f8b194c114@kommune.dp2.test>\r\n"
        + extra_headers +
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "\r\n"
        "Hej. Jeg vedh=E6fter min ans=F8gning. " + "y" * 200 + "\r\n"
        "Mvh Anna\r\n"
        "--b1\r\n"
        'Content-Type: application/pdf; name="ans=F8gning.pdf"\r\n'
        "Content-Disposition: attachment; filename*=utf-8''ans%C3%B8gning.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        + __import__("base64").encodebytes(PDF).decode().replace("\n", "\r\n") +
        "--b1--\r\n").encode("ascii")


def test_plain_mail_becomes_a_valid_memo() -> None:
    msg = mail_to_memo(plain_mail(), sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                       message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert validate(write_memo(msg, "1.2")) == []
    assert validate(write_memo(msg, "1.1")) == []
    header = msg.message_header
    assert header.sender == BRIDGE_SENDER and header.recipient == BRIDGE_RECIPIENT
    assert len(header.label) == 256 and header.label.startswith("Svær på brev xxx") and header.label.endswith("…")
    assert header.notification is not None and len(header.notification) == 150
    assert header.notification.startswith("Hej. Jeg vedhæfter min ansøgning.")
    assert [r.message_id for r in header.reply_data] == [
        "<8c2ea15d-61fb-4ba9-9366-42f8b194c114@kommune.dp2.test>", "<first@kommune.dp2.test>"]
    assert header.reply_data[0].message_uuid == "8c2ea15d-61fb-4ba9-9366-42f8b194c114"
    assert header.mandatory is None and header.message_type == m.DIGITALPOST
    body = msg.message_body
    assert body is not None and body.created_date_time == LATER
    (text,) = body.main_document.files
    assert text.encoding_format == "text/plain" and text.language == "da"
    assert text.content.decode("utf-8").startswith("\r\nHej. Jeg vedhæfter")
    (attachment,) = body.additional_documents
    (pdf,) = attachment.files
    assert (pdf.encoding_format, pdf.filename, pdf.content) == ("application/pdf", "ansøgning.pdf", PDF)


def test_x_memo_headers_on_a_plain_mail_and_bad_values_refused() -> None:
    extra = ("X-MeMo-Mandatory: true\r\nX-MeMo-Content-Data-Case-ID-Case-ID: SAG-9\r\n"
             "X-MeMo-Content-Data-Case-ID-Case-System: ESDH\r\nReply-By: Wed, 30 Dec 2026 13:00:00 +0100\r\n"
             "X-MeMo-Sender-Sender-ID: 99999999\r\n"
             "X-MeMo-Message-UUID: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n")
    msg = mail_to_memo(plain_mail(extra), sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                       message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    header = msg.message_header
    assert header.mandatory is True
    assert header.content_data == m.ContentData(case_id=m.CaseID(case_id="SAG-9", case_system="ESDH"))
    assert header.reply_by_date_time == datetime(2026, 12, 30, 12, 0, tzinfo=timezone.utc)
    assert header.sender == BRIDGE_SENDER  # identity is never taken from a header
    assert header.message_uuid == "3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10"
    with pytest.raises(MemoInvalid) as refused:
        mail_to_memo(plain_mail("X-MeMo-Reply-By-Date-Time: tomorrow\r\n"), sender=BRIDGE_SENDER,
                     recipient=BRIDGE_RECIPIENT, message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert refused.value.errors[0].path == "/memo:Message/memo:MessageHeader/memo:replyByDateTime"
    with pytest.raises(MemoInvalid) as refused:
        mail_to_memo(plain_mail("X-MeMo-Content-Data-Case-ID-Case-ID: SAG-9\r\n"), sender=BRIDGE_SENDER,
                     recipient=BRIDGE_RECIPIENT, message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert refused.value.errors[0].path.endswith("memo:ContentData/memo:CaseID")


def test_submitted_memo_part_wins_but_not_identity() -> None:
    original = full_memo()
    raw = render(original)
    result = mail_to_memo(raw, sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                          message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    header = result.message_header
    assert (header.sender, header.recipient, header.message_uuid) == (
        BRIDGE_SENDER, BRIDGE_RECIPIENT, "3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10")
    expected = dataclasses.replace(original.message_header, sender=BRIDGE_SENDER,
                                   recipient=BRIDGE_RECIPIENT, message_uuid=header.message_uuid)
    assert differences(expected, header) == []
    assert result.message_body == original.message_body


def test_mail_with_only_a_calendar_invitation() -> None:
    ics = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
           b"UID:outlook-123@example\r\nDTSTAMP:20261127T120000Z\r\nDTSTART:20261201T090000Z\r\n"
           b"DTEND:20261201T100000Z\r\nSUMMARY:M\xc3\xb8de\r\nLOCATION:R\xc3\xa5dhuset\r\n"
           b"END:VEVENT\r\nEND:VCALENDAR\r\n")
    raw = (b"From: a@borger.dp2.test\r\nTo: b@kommune.dp2.test\r\nSubject: Invitation\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n" + ics)
    msg = mail_to_memo(raw, sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                       message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert msg.message_body is not None
    (action,) = msg.message_body.main_document.actions
    assert action.reservation is not None
    assert (action.reservation.abstract, action.reservation.location) == ("Møde", "Rådhuset")
    assert action.reservation.start_date_time == datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    assert validate(write_memo(msg)) == []


def test_forwarded_memo_is_the_users_message_with_memo_xml_attached() -> None:
    original = full_memo()
    mail = parsed(render(original))
    del mail["Subject"]
    mail["Subject"] = "Fwd: " + original.message_header.label
    (body,) = [p for p in mail.iter_parts() if p.get_content_type() == "multipart/alternative"] or \
        [next(mail.iter_parts())]
    body.set_content("Se venligst nedenstående.\r\n", charset="utf-8")
    result = mail_to_memo(mail.as_bytes(policy=policy.SMTP), sender=BRIDGE_SENDER,
                          recipient=BRIDGE_RECIPIENT, message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10",
                          now=LATER)
    assert result.message_header.label == "Fwd: " + original.message_header.label
    assert result.message_body is not None
    assert result.message_body.main_document.files[0].content == "Se venligst nedenstående.\r\n".encode()
    memo_docs = [d for d in result.message_body.additional_documents if d.files[0].filename == "memo.xml"]
    assert [d.files[0].encoding_format for d in memo_docs] == ["application/xml"]
    assert parse_memo(memo_docs[0].files[0].content) == original
    assert validate(write_memo(result)) == []


def test_hostile_mail_still_gives_a_valid_memo() -> None:
    raw = (b"From: a@borger.dp2.test\r\nSubject: Sv\xe6r \x01p\xe5\r\n brev\r\n"
           b"In-Reply-To: <\x02odd@x>\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Hej \xe6\xf8\x00\r\n--b\r\n"
           b'Content-Type: application/x-thing\r\nContent-Disposition: attachment; filename="../../a\x03b.dat"\r\n'
           b"Content-Description: " + b"d" * 400 + b"\r\n\r\nraw \xff bytes\r\n--b--\r\n")
    msg = mail_to_memo(raw, sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                       message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert validate(write_memo(msg, "1.1")) == []
    assert msg.message_body is not None
    (doc,) = msg.message_body.additional_documents
    assert doc.files[0].filename == "a b.dat" and doc.files[0].content == b"raw \xff bytes"
    assert doc.label is not None and len(doc.label) == 256


def test_mail_that_is_only_a_pdf_makes_it_the_main_document() -> None:
    import base64
    raw = (b"From: a@borger.dp2.test\r\nSubject: Brev\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="brev.pdf"\r\n'
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF).replace(b"\n", b"\r\n"))
    msg = mail_to_memo(raw, sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                       message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert msg.message_body is not None
    (pdf,) = msg.message_body.main_document.files
    assert (pdf.encoding_format, pdf.filename, pdf.content) == ("application/pdf", "brev.pdf", PDF)
    assert msg.message_body.additional_documents == ()
    assert validate(write_memo(msg)) == []


def test_long_values_fold_within_limits() -> None:
    msg = full_memo()
    header = dataclasses.replace(msg.message_header, label="Æ" * 256,
                                 additional_notification="https://x.example/" + "a" * 238,
                                 message_code="b" * 256)
    msg = dataclasses.replace(msg, message_header=header)
    raw = render(msg)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert all(not part.defects for part in parsed(raw).walk())
    assert str(parsed(raw)["X-MeMo-Additional-Notification"]) == header.additional_notification
    assert differences(msg, back(raw, msg)) == []


def test_reply_data_message_ids_become_the_thread_and_back() -> None:
    original = full_memo()
    header = original.message_header
    replies = tuple(dataclasses.replace(r, message_id=f"<p{n}@kommune.dp2.test>")
                    for n, r in enumerate(header.reply_data, 1))
    msg = dataclasses.replace(original, message_header=dataclasses.replace(header, reply_data=replies))
    mail = parsed(render(msg))
    assert mail["In-Reply-To"] == "<p1@kommune.dp2.test>"
    assert mail["References"] == "<p2@kommune.dp2.test> <p1@kommune.dp2.test>"
    assert differences(msg, back(render(msg), msg)) == []
    # without memo.xml, the thread alone gives ReplyData in the same order
    for part in list(mail.iter_parts()):
        if part.get_filename() == "memo.xml":
            mail.get_payload().remove(part)
    for name in list(mail.keys()):
        if name.lower().startswith("x-memo-reply-data"):
            del mail[name]
    result = back(mail.as_bytes(policy=policy.SMTP), msg)
    assert [r.message_id for r in result.message_header.reply_data] == [r.message_id for r in replies]


def test_attachment_added_to_a_rendered_memo_becomes_one_more_document() -> None:
    original = full_memo()
    mail = parsed(render(original))
    mail.add_attachment(b"extra bytes", maintype="application", subtype="pdf", filename="tillaeg.pdf")
    result = back(mail.as_bytes(policy=policy.SMTP), original)
    assert result.message_body is not None and original.message_body is not None
    *same, extra = result.message_body.additional_documents
    assert tuple(same) == original.message_body.additional_documents
    assert [(f.encoding_format, f.filename, f.content) for f in extra.files] == [
        ("application/pdf", "tillaeg.pdf", b"extra bytes")]
    assert dataclasses.replace(result.message_body, additional_documents=tuple(same)) == original.message_body


def test_invalid_memo_part_is_refused_with_its_path() -> None:
    bad = example("example_v1.2_MeMo_NemSMS.xml").replace(b"fcdcf318-59b6-427c", b"not-a-uuid")
    mail = EmailMessage(policy=policy.SMTP)
    mail["Subject"] = "Label Text"
    mail.set_content("Message Text\r\n")
    mail.add_attachment(bad, maintype="application", subtype="xml", filename="memo.xml")
    with pytest.raises(MemoInvalid) as refused:
        mail_to_memo(mail.as_bytes(), sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                     message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    assert refused.value.errors[0].path == "/memo:Message/memo:MessageHeader/memo:messageUUID"


# --- stored messages: messageUUID <-> Message-ID maps given by the caller ----------------------

def memo_part(mail: EmailMessage) -> bytes:
    (part,) = [p for p in leaves(mail) if p.get_filename() == "memo.xml"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_reply_data_uuids_of_stored_messages_give_the_thread() -> None:
    original = full_memo()                      # two ReplyData, messageID "MSG-1", "MSG-2"
    first, second = original.message_header.reply_data
    memo_xml = write_memo(original)
    plain = parsed(render(original, memo_xml))
    assert plain["In-Reply-To"] is None and plain["References"] is None   # "MSG-n" is no msg-id

    stored = {first.message_uuid: "<stored-1@kommune.dp2.test>",
              second.message_uuid: "<stored-2@kommune.dp2.test>", "unrelated": "<x@y>"}
    raw = memo_to_mail(original, memo_xml, from_header=FROM, to_header=TO,
                       message_id="<r1@kommune.dp2.test>", date=DATE, message_ids=stored)
    mail = parsed(raw)
    assert mail["In-Reply-To"] == "<stored-1@kommune.dp2.test>"          # the first is the parent
    assert mail["References"] == "<stored-2@kommune.dp2.test> <stored-1@kommune.dp2.test>"
    assert memo_part(mail) == memo_xml                                     # memo.xml unchanged
    assert back(raw, original) == original


def test_a_reply_data_message_id_in_msg_id_form_wins_over_the_map() -> None:
    original = full_memo()
    first, second = original.message_header.reply_data
    replies = (dataclasses.replace(first, message_id=None),
               dataclasses.replace(second, message_id="<own@kommune.dp2.test>"))
    msg = dataclasses.replace(original, message_header=dataclasses.replace(
        original.message_header, reply_data=replies))
    without = parsed(render(msg))
    assert without["In-Reply-To"] == "<own@kommune.dp2.test>"
    assert without["References"] == "<own@kommune.dp2.test>"
    raw = memo_to_mail(msg, write_memo(msg), from_header=FROM, to_header=TO,
                       message_id="<r1@kommune.dp2.test>", date=DATE,
                       message_ids={first.message_uuid: "<stored-1@kommune.dp2.test>",
                                    second.message_uuid: "<stored-2@kommune.dp2.test>"})
    mail = parsed(raw)
    assert mail["In-Reply-To"] == "<stored-1@kommune.dp2.test>"
    assert mail["References"] == "<own@kommune.dp2.test> <stored-1@kommune.dp2.test>"


def test_thread_message_ids_of_stored_messages_give_their_uuids() -> None:
    stored_uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    kwargs = dict(sender=BRIDGE_SENDER, recipient=BRIDGE_RECIPIENT,
                  message_uuid="3f1c7a52-8e2b-4c61-9d3e-5b7a2f4e8c10", now=LATER)
    before = mail_to_memo(plain_mail(), **kwargs).message_header.reply_data
    assert [(r.message_id, r.message_uuid) for r in before] == [
        ("<8c2ea15d-61fb-4ba9-9366-42f8b194c114@kommune.dp2.test>", "8c2ea15d-61fb-4ba9-9366-42f8b194c114"),
        ("<first@kommune.dp2.test>", before[1].message_uuid)]
    assert before[1].message_uuid != stored_uuid                            # derived from the id

    mapped = mail_to_memo(plain_mail(), **kwargs, message_uuids={
        "<first@kommune.dp2.test>": stored_uuid, "<other@x>": "7c9e6679-7425-40de-944b-e07fc1f90ae7"})
    after = mapped.message_header.reply_data
    assert [(r.message_id, r.message_uuid) for r in after] == [
        ("<8c2ea15d-61fb-4ba9-9366-42f8b194c114@kommune.dp2.test>", "8c2ea15d-61fb-4ba9-9366-42f8b194c114"),
        ("<first@kommune.dp2.test>", stored_uuid)]
    assert validate(write_memo(mapped)) == []


def test_stored_uuids_also_fill_the_thread_of_a_rendered_memo_without_reply_data() -> None:
    original = full_memo()
    msg = dataclasses.replace(original, message_header=dataclasses.replace(
        original.message_header, reply_data=()))
    mail = parsed(render(msg))
    del mail["In-Reply-To"]
    mail["In-Reply-To"] = "<parent@kommune.dp2.test>"
    stored_uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    header = msg.message_header
    result = mail_to_memo(mail.as_bytes(policy=policy.SMTP), sender=header.sender,
                          recipient=header.recipient, message_uuid=header.message_uuid, now=LATER,
                          message_uuids={"<parent@kommune.dp2.test>": stored_uuid})
    assert [(r.message_id, r.message_uuid) for r in result.message_header.reply_data] == [
        ("<parent@kommune.dp2.test>", stored_uuid)]

"""MeMo -> mail: the RFC 5322 message a reader's client shows for a delivered MeMo.

Owns `memo_to_mail()`, `memo_keywords()` (the IMAP keywords a delivered MeMo carries) and the
name of the memo.xml part.  Pure: no database, no network, no clock (times are arguments).

A delivered MeMo is one RFC 5322 message (CRLF, ASCII header fields with RFC 2047 words, 7-bit
bodies in quoted-printable or base64):

    multipart/mixed
      multipart/alternative       the MainDocument's text/plain and text/html files, with the
                                  EntryPoint actions as labelled links and the Reservations listed;
                                  a MainDocument without text gets a short note (Danish, English)
      <other MainDocument files>  inline, with their filenames (a PDF letter: application/pdf)
      text/calendar               one per Reservation action, METHOD:REQUEST (RFC 5546/6047)
      <Additional/Technical files> attachments; Content-Description = the document's label
      application/xml memo.xml    the MeMo itself, so that nothing is lost

Every part made from a document File carries `X-MeMo-Document: <kind> <n>` (kind main,
additional or technical; n counts documents of that kind from 1), `X-MeMo-Document-ID` when the
document has an id, `Content-Description` (the document's label) and `Content-Language`.  The
header carries the `X-MeMo-*` fields of `memoheaders.py`.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import html
import mimetypes
import re
from collections.abc import Mapping
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, getaddresses

from bridge.digitalpost import model as m
from bridge.digitalpost.calendar import CalendarEvent, invitation
from bridge.digitalpost.memoheaders import DOCUMENT_HEADER, DOCUMENT_ID_HEADER, memo_headers
from bridge.digitalpost.values import MSG_ID, clean, value_text

MEMO_FILENAME = "memo.xml"
KEYWORD_MANDATORY = "$Mandatory"
KEYWORD_LEGAL_NOTICE = "$LegalNotice"

# 7-bit output with CRLF line ends; header fields folded at 78 and RFC 2047-encoded when needed.
_OUT = email.policy.SMTP.clone(cte_type="7bit")


def memo_keywords(msg: m.Message) -> list[str]:
    """The IMAP keywords the delivered copy of `msg` gets: `$Mandatory`, `$LegalNotice`."""
    header = msg.message_header
    keywords = []
    if header.mandatory:
        keywords.append(KEYWORD_MANDATORY)
    if header.legal_notification:
        keywords.append(KEYWORD_LEGAL_NOTICE)
    return keywords



def _media_type(encoding_format: str, filename: str) -> tuple[str, str]:
    """The MIME type of a File: its encodingFormat when that is a media type, else a guess from
    the format ("pdf") or the filename, else application/octet-stream."""
    fmt = encoding_format.strip().lower()
    if re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", fmt):
        maintype, _, subtype = fmt.partition("/")
        return maintype, subtype
    guess = mimetypes.guess_type(f"x.{fmt}")[0] or mimetypes.guess_type(filename)[0]
    maintype, _, subtype = (guess or "application/octet-stream").partition("/")
    return maintype, subtype


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _actions_text(actions: tuple[m.Action, ...]) -> tuple[str, str]:
    """The actions as a plain-text block and an HTML block ("" when there are none)."""
    if not actions:
        return "", ""
    lines = ["", "", "Handlinger / Actions:"]
    items = []
    for action in actions:
        if action.entry_point is not None:
            url = action.entry_point.url
            lines.append(f"* {action.label}: {url}")
            items.append(f'<li>{html.escape(action.label)}: <a href="{html.escape(url)}">'
                         f"{html.escape(url)}</a></li>")
        elif action.reservation is not None:
            r = action.reservation
            when = (f"{value_text(r.start_date_time)} - {value_text(r.end_date_time)} (UTC)")
            lines.append(f"* {action.label}: {r.abstract}, {r.location}, {when}"
                         " (se invitationen / see the invitation)")
            items.append(f"<li>{html.escape(action.label)}: {html.escape(r.abstract)}, "
                         f"{html.escape(r.location)}, {html.escape(when)}</li>")
        else:
            lines.append(f"* {action.label} ({action.action_code})")
            items.append(f"<li>{html.escape(action.label)} ({html.escape(action.action_code)})</li>")
    block = "\r\n".join(lines) + "\r\n"
    return block, ("<hr><p><strong>Handlinger / Actions</strong></p><ul>" + "".join(items) + "</ul>")


def _with_html_block(page: str, block: str) -> str:
    if not block:
        return page
    at = page.lower().rfind("</body>")
    return page + block if at < 0 else page[:at] + block + page[at:]


def _text_part(text: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=_OUT)
    part.set_content(text, subtype=subtype, charset="utf-8", cte="quoted-printable")
    return part


def _file_part(f: m.File, *, kind: str, number: int, doc_id: str | None, label: str | None,
               disposition: str) -> MIMEPart:
    part = MIMEPart(policy=_OUT)
    maintype, subtype = _media_type(f.encoding_format, f.filename)
    filename = clean(f.filename)
    part.set_content(f.content, maintype, subtype, cte="base64", disposition=disposition,
                     filename=filename, params={"name": filename})
    if label:
        part["Content-Description"] = clean(label)
    part["Content-Language"] = clean(f.language)
    part[DOCUMENT_HEADER] = f"{kind} {number}"
    if doc_id:
        part[DOCUMENT_ID_HEADER] = clean(doc_id)
    return part


def _address(header_value: str) -> str | None:
    found = [addr for _, addr in getaddresses([header_value]) if addr]
    return found[0] if found else None


def _body_parts(msg: m.Message) -> list[MIMEPart]:
    """The text body (an alternative or one text part) and the inline MainDocument files."""
    body = msg.message_body
    header = msg.message_header
    if body is None:
        note = header.notification or header.label
        return [_text_part(note + "\r\n", "plain")]
    main = body.main_document
    plain = next((f for f in main.files if f.encoding_format.lower().startswith("text/plain")), None)
    page = next((f for f in main.files if f.encoding_format.lower().startswith("text/html")), None)
    text_block, html_block = _actions_text(main.actions)
    texts: list[MIMEPart] = []
    if plain is not None:
        texts.append(_text_part(_decode_text(plain.content) + text_block, "plain"))
    if page is not None:
        texts.append(_text_part(_with_html_block(_decode_text(page.content), html_block), "html"))
    others = [f for f in main.files if f is not plain and f is not page]
    if not texts:
        names = ", ".join(f.filename for f in others)
        title = f"{main.label}: " if main.label else ""
        note = (f"{title}Brevet er vedhæftet / the letter is attached: {names}\r\n")
        texts.append(_text_part(note + text_block, "plain"))
    if len(texts) == 1:
        first = texts[0]
    else:
        first = MIMEPart(policy=_OUT)
        first.make_alternative()
        for part in texts:
            first.attach(part)
    inline = [_file_part(f, kind="main", number=1, doc_id=main.main_document_id, label=main.label,
                         disposition="inline") for f in others]
    return [first, *inline]


def _calendar_parts(msg: m.Message, *, from_addr: str | None, to_addr: str | None,
                    dtstamp: dt.datetime) -> list[MIMEPart]:
    body = msg.message_body
    if body is None:
        return []
    actions = list(body.main_document.actions)
    for doc in body.additional_documents:
        actions += doc.actions
    parts = []
    for action in actions:
        r = action.reservation
        if r is None:
            continue
        event = CalendarEvent(uid=r.reservation_uuid, summary=r.abstract, description=r.description,
                              location=r.location, start=r.start_date_time, end=r.end_date_time,
                              organizer_mail=r.organizer_mail, organizer_name=r.organizer_name)
        data = invitation(event, dtstamp=dtstamp, attendee=to_addr, fallback_organizer=from_addr)
        part = MIMEPart(policy=_OUT)
        part.set_content(data, "text", "calendar", cte="base64",
                         params={"method": "REQUEST", "charset": "utf-8"})
        part["Content-Description"] = clean(action.label)
        parts.append(part)
    return parts


def _document_parts(msg: m.Message) -> list[MIMEPart]:
    body = msg.message_body
    if body is None:
        return []
    parts = []
    for n, doc in enumerate(body.additional_documents, 1):
        parts += [_file_part(f, kind="additional", number=n, doc_id=doc.additional_document_id,
                             label=doc.label, disposition="attachment") for f in doc.files]
    for n, tdoc in enumerate(body.technical_documents, 1):
        parts += [_file_part(f, kind="technical", number=n, doc_id=tdoc.technical_document_id,
                             label=tdoc.label, disposition="attachment") for f in tdoc.files]
    return parts


def _thread_ids(msg: m.Message, message_ids: Mapping[str, str]) -> list[str]:
    """The Message-IDs of the ReplyData, in order: its messageID when that is in msg-id form,
    else the Message-ID `message_ids` gives for its messageUUID, if any."""
    ids: list[str] = []
    for reply in msg.message_header.reply_data:
        given = (reply.message_id or "").strip()
        if not MSG_ID.fullmatch(given):
            given = message_ids.get(reply.message_uuid, "").strip()
        if MSG_ID.fullmatch(given):
            ids.append(given)
    return ids


def memo_to_mail(msg: m.Message, memo_xml: bytes, *, from_header: str, to_header: str,
                 message_id: str, date: dt.datetime,
                 message_ids: Mapping[str, str] | None = None) -> bytes:
    """The RFC 5322 message a reader's client gets for `msg` (see the module docstring).

    `from_header`/`to_header` are used as given (the caller masks the parties; note that memo.xml
    carries Sender and Recipient as they are); `memo_xml` (the MeMo as received, or
    `write_memo(msg)`) is attached unchanged as memo.xml; `date` (aware) is the Date field and
    the calendar DTSTAMP.  The caller sets the IMAP keywords `memo_keywords(msg)`.

    In-Reply-To/References name the ReplyData's messages (the first ReplyData is the parent):
    a ReplyData's messageID when it is a msg-id ("<...>"), else `message_ids[messageUUID]`
    (messageUUID -> Message-ID of messages the caller has stored), else nothing.
    """
    header = msg.message_header
    from_addr = _address(from_header)
    to_addr = _address(to_header)
    root = EmailMessage(policy=_OUT)
    root["From"] = from_header
    root["To"] = to_header
    root["Subject"] = clean(header.label)
    root["Date"] = format_datetime(date.astimezone(dt.timezone.utc))
    root["Message-ID"] = message_id
    thread = _thread_ids(msg, message_ids or {})
    if thread:  # the first ReplyData is the parent; References ends with it (RFC 5322 3.6.4)
        root["In-Reply-To"] = thread[0]
        root["References"] = " ".join(thread[1:] + thread[:1])
    if header.reply_by_date_time is not None:
        root["Reply-By"] = format_datetime(header.reply_by_date_time.astimezone(dt.timezone.utc))
    for name, value in memo_headers(msg):
        root[name] = clean(value)
    root["MIME-Version"] = "1.0"
    root.make_mixed()
    memo_part = MIMEPart(policy=_OUT)
    memo_part.set_content(memo_xml, "application", "xml", cte="base64", disposition="attachment",
                          filename=MEMO_FILENAME, params={"name": MEMO_FILENAME})
    memo_part["Content-Description"] = "MeMo (Digital Post)"
    for part in (*_body_parts(msg),
                 *_calendar_parts(msg, from_addr=from_addr, to_addr=to_addr, dtstamp=date),
                 *_document_parts(msg), memo_part):
        root.attach(part)
    return root.as_bytes(policy=_OUT)

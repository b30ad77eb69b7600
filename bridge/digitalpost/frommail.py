"""Mail -> MeMo: the MeMo a message submitted over SMTP becomes (`mail_to_memo`).

Reads any mail: a plain one becomes a MeMo of its subject, text, calendar invitations and
attachments; one that carries a memo.xml part (a MeMo the bridge delivered, replied to or sent
on) keeps that MeMo's fields.  The rules are in `mail_to_memo`'s docstring.  Pure: no database,
no network, no clock (times are arguments).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.policy
import html
import mimetypes
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

from bridge.digitalpost import model as m
from bridge.digitalpost.calendar import CalendarEvent, read_invitations
from bridge.digitalpost.memoheaders import (DOCUMENT_HEADER, DOCUMENT_ID_HEADER, HEADER_PREFIX,
                                            apply_memo_fields)
from bridge.digitalpost.tomail import MEMO_FILENAME
from bridge.digitalpost.values import MSG_ID, UUID4, clean, xml_chars
from bridge.digitalpost.xml import parse_memo, write_memo

LABEL_MAX = 256
NOTIFICATION_MAX = 150
TEXT_MAX = 256
DEFAULT_LANGUAGE = "da"
NO_SUBJECT = "(intet emne / no subject)"

_IN = email.policy.default


@dataclass(frozen=True)
class _Attachment:
    """A leaf part of a submitted mail other than its text body and memo.xml."""

    media_type: str
    filename: str | None
    description: str | None
    language: str | None
    document: str | None      # X-MeMo-Document value, e.g. "additional 2"
    document_id: str | None
    data: bytes


@dataclass
class _ReadMail:
    subject: str
    plain: str | None = None
    html: str | None = None
    language: str | None = None
    reply_by: dt.datetime | None = None
    attachments: list[_Attachment] = field(default_factory=list)
    memo_xml: bytes | None = None
    events: list[CalendarEvent] = field(default_factory=list)
    thread: list[str] = field(default_factory=list)
    memo_fields: list[tuple[str, str]] = field(default_factory=list)
    message_uuids: Mapping[str, str] = field(default_factory=dict)   # msg-id -> stored UUID


def _leaves(part: EmailMessage) -> list[EmailMessage]:
    """Leaf parts in order; an attached message (message/rfc822) is one leaf."""
    if part.get_content_maintype() == "multipart":
        return [leaf for sub in part.iter_parts() for leaf in _leaves(sub)]
    return [part]


def _leaf_bytes(part: EmailMessage) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return inner[0].as_bytes(policy=email.policy.SMTP)  # 8-bit kept as it came
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _language(value: Any) -> str | None:
    text = str(value or "").strip().lower()[:2]
    return text if re.fullmatch(r"[a-z]{2}", text) else None


def _body_text(part: EmailMessage) -> str:
    """A text part's content; an unknown charset is read as UTF-8 with replacements."""
    try:
        text = part.get_content()
    except LookupError:
        text = _leaf_bytes(part).decode("utf-8", "replace")
    return xml_chars(text)


def _header_text(part: EmailMessage, name: str) -> str | None:
    value = part.get(name)
    return clean(str(value)) or None if value is not None else None


def _read_mail(raw: bytes) -> _ReadMail:
    msg = message_from_bytes(raw, policy=_IN)
    mail = _ReadMail(subject=clean(str(msg.get("subject", ""))))
    plain = msg.get_body(preferencelist=("plain",))
    page = msg.get_body(preferencelist=("html",))
    if plain is not None:
        mail.plain = _body_text(plain)
    if page is not None:
        mail.html = _body_text(page)
    first = plain if plain is not None else page
    if first is not None:
        mail.language = _language(first.get("content-language")) or _language(msg.get("content-language"))
    for part in _leaves(msg):
        if part is plain or part is page:
            continue
        data = _leaf_bytes(part)
        if ((part.get_filename() or "").lower() == MEMO_FILENAME
                and part.get_content_type() in ("application/xml", "text/xml")):
            mail.memo_xml = data
            continue
        if part.get_content_type() == "text/calendar":
            try:
                found = read_invitations(data)
            except ValueError:
                found = []
            if found:
                mail.events.extend(found)
                continue
        mail.attachments.append(_Attachment(
            media_type=part.get_content_type(), filename=part.get_filename(),
            description=_header_text(part, "content-description"),
            language=_language(part.get("content-language")),
            document=_header_text(part, DOCUMENT_HEADER),
            document_id=_header_text(part, DOCUMENT_ID_HEADER), data=data))
    for name in ("in-reply-to", "references"):
        for value in msg.get_all(name, []):
            for mid in MSG_ID.findall(clean(str(value))):
                if mid not in mail.thread and len(mid) <= TEXT_MAX:
                    mail.thread.append(mid)
    if msg.get("reply-by"):
        try:
            when = parsedate_to_datetime(str(msg["reply-by"]))
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            mail.reply_by = when.astimezone(dt.timezone.utc)
    for name, value in msg.items():
        lower = name.lower()
        if lower.startswith(HEADER_PREFIX.lower()) and lower not in (
                DOCUMENT_HEADER.lower(), DOCUMENT_ID_HEADER.lower()):
            mail.memo_fields.append((lower[len(HEADER_PREFIX):], clean(str(value))))
    return mail


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _short_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "fil"
    if len(name) <= TEXT_MAX:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) < 16:
        return stem[:TEXT_MAX - len(ext) - 1] + "." + ext
    return name[:TEXT_MAX]


def _uuid_for(ident: str) -> str:
    """The UUID in a msg-id's left part if it is a version 4 UUID, else one derived from the id."""
    found = UUID4.search(ident)
    if found:
        return found[0]
    return str(uuid.UUID(bytes=uuid.uuid5(uuid.NAMESPACE_URL, f"mid:{ident}").bytes, version=4))


def _reply_data(mail: _ReadMail) -> tuple[m.ReplyData, ...]:
    """The mail's thread as ReplyData: messageID = the msg-id, messageUUID = the stored message's
    UUID when `mail.message_uuids` knows the id, else the UUID in it or one derived from it."""
    return tuple(m.ReplyData(message_id=mid, message_uuid=mail.message_uuids.get(mid) or _uuid_for(mid))
                 for mid in mail.thread)


def _first_line(mail: _ReadMail) -> str | None:
    text = mail.plain
    if text is None and mail.html is not None:
        text = html.unescape(re.sub(r"<[^>]*>", " ", re.sub(r"(?is)<(head|style|script).*?</\1>", "",
                                                              mail.html)))
    for line in (text or "").splitlines():
        words = clean(line).split()
        if words:
            return _shorten(" ".join(words), NOTIFICATION_MAX)
    return None


def _file(att: _Attachment, number: int, default_language: str) -> m.File:
    media = att.media_type if len(att.media_type) <= TEXT_MAX else "application/octet-stream"
    if media == "application/octet-stream" and att.filename:
        media = mimetypes.guess_type(att.filename)[0] or media
    ext = mimetypes.guess_extension(media) or ".bin"
    return m.File(encoding_format=media, filename=_short_filename(clean(att.filename or "") or f"bilag-{number}{ext}"),
                  language=att.language or default_language, content=att.data)


def _grouped(attachments: list[_Attachment], language: str) -> tuple[
        list[m.File], str | None, str | None, list[m.AdditionalDocument], list[m.TechnicalDocument]]:
    """Attachments as documents, grouped by their X-MeMo-Document marks (unmarked: one
    AdditionalDocument each): MainDocument files with its id and label, and the other documents."""
    groups: dict[tuple[str, str], list[_Attachment]] = {}
    for n, att in enumerate(attachments, 1):
        kind, _, number = (att.document or "").partition(" ")
        key = (kind, number) if kind in ("main", "additional", "technical") else ("additional", f"#{n}")
        groups.setdefault(key, []).append(att)
    main: list[m.File] = []
    main_id = main_label = None
    additional: list[m.AdditionalDocument] = []
    technical: list[m.TechnicalDocument] = []
    counter = 0
    for (kind, _), atts in groups.items():
        files = []
        for att in atts:
            counter += 1
            files.append(_file(att, counter, language))
        doc_id = atts[0].document_id
        label = _shorten(atts[0].description, TEXT_MAX) if atts[0].description else None
        if kind == "main":
            main += files
            main_id, main_label = doc_id, label
        elif kind == "technical":
            technical.append(m.TechnicalDocument(technical_document_id=doc_id, label=label,
                                                 files=tuple(files)))
        else:
            additional.append(m.AdditionalDocument(additional_document_id=doc_id,
                                                   label=label or files[0].filename,
                                                   files=tuple(files)))
    return main, main_id, main_label, additional, technical


def _reservation(event: CalendarEvent) -> m.Action:
    uid = event.uid if UUID4.fullmatch(event.uid) else _uuid_for(event.uid)
    return m.Action(
        label=_shorten(event.summary or "Aftale / Appointment", TEXT_MAX), action_code="AFTALE",
        reservation=m.Reservation(
            description=_shorten(event.description, TEXT_MAX), reservation_uuid=uid,
            abstract=_shorten(event.summary, TEXT_MAX), location=_shorten(event.location, TEXT_MAX),
            start_date_time=event.start, end_date_time=event.end,
            organizer_mail=_shorten(event.organizer_mail, TEXT_MAX) if event.organizer_mail else None,
            organizer_name=_shorten(event.organizer_name, TEXT_MAX) if event.organizer_name else None))


def _from_mail(mail: _ReadMail, *, sender: m.Sender, recipient: m.Recipient, message_uuid: str,
               now: dt.datetime) -> m.Message:
    language = mail.language or DEFAULT_LANGUAGE
    texts = []
    if mail.plain is not None:
        texts.append(m.File(encoding_format="text/plain", filename="besked.txt", language=language,
                            content=mail.plain.encode("utf-8")))
    if mail.html is not None:
        texts.append(m.File(encoding_format="text/html", filename="besked.html", language=language,
                            content=mail.html.encode("utf-8")))
    main, main_id, main_label, additional, technical = _grouped(mail.attachments, language)
    main = texts + main
    if not main and additional:  # a mail that is only attachments: the first one is the letter
        promoted = additional.pop(0)
        main, main_id, main_label = list(promoted.files), promoted.additional_document_id, promoted.label
    if not main:
        main = [m.File(encoding_format="text/plain", filename="besked.txt", language=language, content=b"")]
    body = m.MessageBody(
        created_date_time=now.astimezone(dt.timezone.utc),
        main_document=m.MainDocument(main_document_id=main_id, label=main_label, files=tuple(main),
                                     actions=tuple(_reservation(e) for e in mail.events)),
        additional_documents=tuple(additional), technical_documents=tuple(technical))
    header = m.MessageHeader(
        message_type=m.DIGITALPOST, message_uuid=message_uuid,
        label=_shorten(mail.subject, LABEL_MAX) if mail.subject else NO_SUBJECT,
        notification=_first_line(mail), reply_by_date_time=mail.reply_by,
        sender=sender, recipient=recipient,
        reply_data=_reply_data(mail))
    msg = m.Message(message_header=header, message_body=body)
    return apply_memo_fields(msg, mail.memo_fields)




def _known_contents(msg: m.Message) -> set[bytes]:
    body = msg.message_body
    if body is None:
        return set()
    docs = (body.main_document, *body.additional_documents, *body.technical_documents)
    return {f.content for doc in docs for f in doc.files}


def _from_memo_part(mail: _ReadMail, base: m.Message, *, sender: m.Sender, recipient: m.Recipient,
                    message_uuid: str, now: dt.datetime) -> m.Message:
    """The submitted memo.xml's message with the bridge's identity fields, plus what the mail
    adds to it: its thread when the MeMo has no ReplyData, attachments that are not its files."""
    header = dataclasses.replace(base.message_header, message_uuid=message_uuid, sender=sender,
                                 recipient=recipient)
    if not header.reply_data and mail.thread:
        header = dataclasses.replace(header, reply_data=_reply_data(mail))
    known = _known_contents(base)
    extra = [a for a in mail.attachments if a.data not in known]
    body = base.message_body
    if extra and body is None:
        body = _from_mail(dataclasses.replace(mail, attachments=extra, events=[], memo_fields=[]),
                          sender=sender, recipient=recipient, message_uuid=message_uuid,
                          now=now).message_body
    elif extra:
        main, main_id, _, additional, technical = _grouped(extra, mail.language or DEFAULT_LANGUAGE)
        if main:
            additional.insert(0, m.AdditionalDocument(additional_document_id=main_id,
                                                      label=main[0].filename, files=tuple(main)))
        body = dataclasses.replace(
            body, additional_documents=body.additional_documents + tuple(additional),
            technical_documents=body.technical_documents + tuple(technical))
    return dataclasses.replace(base, message_header=header, message_body=body)


def mail_to_memo(raw: bytes, *, sender: m.Sender, recipient: m.Recipient, message_uuid: str,
                 now: dt.datetime, message_uuids: Mapping[str, str] | None = None) -> m.Message:
    """The MeMo for a submitted mail `raw`; it validates (`write_memo` accepts it).

    Without a memo.xml part: label = Subject (at most 256 characters, "…" when cut), notification
    = the first text line (at most 150), MainDocument = the text/plain and text/html bodies (UTF-8
    files besked.txt, besked.html; language from Content-Language, else "da") with calendar
    invitations as Reservation actions, attachments = AdditionalDocuments (encodingFormat = the
    media type; parts marked X-MeMo-Document keep their document grouping, kind, id and label),
    In-Reply-To/References = ReplyData (messageID = the msg-id, messageUUID = the UUID in it or
    one derived from it; `message_uuids`, Message-ID -> UUID of messages the caller has stored,
    gives the stored message's UUID instead), Reply-By = replyByDateTime, then every X-MeMo-*
    field in its place.

    With a memo.xml part (a MeMo the bridge delivered, or one a system attached) and no Subject
    or a Subject equal to that MeMo's label (white space aside), that MeMo's fields win: the
    mail's Subject, body, calendar parts and X-MeMo-* fields are its rendering; the mail adds its
    thread when the MeMo has no ReplyData, and attachments that are none of its files.  With
    another Subject (a forward: "Fwd: label") the mail is read as a plain mail and memo.xml is an
    AdditionalDocument.  In every case the identity fields are the bridge's: `message_uuid`,
    `sender` and `recipient`.

    Raises MemoInvalid (with the element path) when the memo.xml part is not a valid MeMo, when
    an X-MeMo-* value is not usable, or when the result does not validate.
    """
    mail = _read_mail(raw)
    mail.message_uuids = message_uuids or {}
    base = parse_memo(mail.memo_xml) if mail.memo_xml is not None else None
    if base is not None and mail.subject and mail.subject.split() != clean(
            base.message_header.label).split():
        # Not this MeMo's own mail (e.g. a forward, "Fwd: label"): the user's text is the message
        # and memo.xml is one of its attachments.
        mail.attachments.append(_Attachment(media_type="application/xml", filename=MEMO_FILENAME,
                                            description=None, language=None, document=None,
                                            document_id=None, data=mail.memo_xml or b""))
        base = None
    if base is not None:
        msg = _from_memo_part(mail, base, sender=sender, recipient=recipient,
                              message_uuid=message_uuid, now=now)
    else:
        msg = _from_mail(mail, sender=sender, recipient=recipient, message_uuid=message_uuid, now=now)
    write_memo(msg)
    return msg

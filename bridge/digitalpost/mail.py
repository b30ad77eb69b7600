"""MeMo <-> Internet mail: the message a mail client shows for a MeMo, and the MeMo a mail becomes.

Owns `memo_to_mail()` (delivering a MeMo to a mailbox), `mail_to_memo()` (any message submitted
over SMTP), `memo_keywords()` (the IMAP keywords a delivered MeMo carries) and the `X-MeMo-*`
header naming scheme.  Pure: no database, no network, no clock (times are arguments).

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
document has an id, `Content-Description` (the document's label) and `Content-Language`.

`X-MeMo-*` header naming scheme (stable; field names are case-insensitive): one field per leaf
value of MessageHeader (except `label`, which is the Subject, and the identity elements Sender
and Recipient, which the bridge decides and the caller shows masked in From/To), plus the
`memoVersion`/`memoSchVersion` attributes and MessageBody's `createdDateTime`; a submission's
are all read back except `X-MeMo-Message-UUID` (the bridge gives the UUID).  The name is
`X-MeMo-` followed by the path of MeMo element names below MessageHeader, each element name
split at its lower-to-upper case changes into capitalised words, all joined by "-"; a repeated
element is followed by its 1-based position.  Examples: `mandatory` -> `X-MeMo-Mandatory`,
`legalNotification` -> `X-MeMo-Legal-Notification`, `ContentData/CaseID/caseSystem` ->
`X-MeMo-Content-Data-Case-ID-Case-System`, the second `ReplyData`'s `messageUUID` ->
`X-MeMo-Reply-Data-2-Message-UUID`, `memoVersion` -> `X-MeMo-Memo-Version`.  Values are the
MeMo XML text (booleans `true`/`false`, date-times `2026-12-30T12:00:00Z`, dates `2026-12-01`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.policy
import functools
import html
import mimetypes
import re
import types
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from typing import Any, Union, get_args, get_origin, get_type_hints

from bridge.digitalpost import model as m
from bridge.digitalpost.calendar import CalendarEvent, invitation, read_invitations
from bridge.digitalpost.xml import MemoInvalid, ValidationError, parse_memo, write_memo

MEMO_FILENAME = "memo.xml"
KEYWORD_MANDATORY = "$Mandatory"
KEYWORD_LEGAL_NOTICE = "$LegalNotice"
HEADER_PREFIX = "X-MeMo-"
DOCUMENT_HEADER = "X-MeMo-Document"
DOCUMENT_ID_HEADER = "X-MeMo-Document-ID"

LABEL_MAX = 256
NOTIFICATION_MAX = 150
TEXT_MAX = 256
DEFAULT_LANGUAGE = "da"
NO_SUBJECT = "(intet emne / no subject)"

# 7-bit output with CRLF line ends; header fields folded at 78 and RFC 2047-encoded when needed.
_OUT = email.policy.SMTP.clone(cte_type="7bit")
_IN = email.policy.default

_MSG_ID = re.compile(r"<[^<>\s]+>")
_UUID4 = re.compile(r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-4[a-fA-F0-9]{3}-[aAbB89][a-fA-F0-9]{3}-[a-fA-F0-9]{12}")
_WORD_BREAK = re.compile(r"(?<=[a-z])(?=[A-Z])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")  # what XML 1.0 cannot carry, beyond controls
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z")

# Header fields of MessageHeader that X-MeMo-* never carries (see the module docstring).
_NOT_IN_HEADERS = {"label", "sender", "recipient"}
# ... and the one written for the reader but never taken from a submission: the bridge's UUID.
_NOT_READ = _NOT_IN_HEADERS | {"message_uuid"}


# --- the IMAP keywords ------------------------------------------------------------------------------

def memo_keywords(msg: m.Message) -> list[str]:
    """The IMAP keywords the delivered copy of `msg` gets: `$Mandatory`, `$LegalNotice`."""
    header = msg.message_header
    keywords = []
    if header.mandatory:
        keywords.append(KEYWORD_MANDATORY)
    if header.legal_notification:
        keywords.append(KEYWORD_LEGAL_NOTICE)
    return keywords


# --- X-MeMo-* names and values -----------------------------------------------------------------------

def _words(local: str) -> str:
    """A MeMo element name as header words: legalNotification -> Legal-Notification."""
    return "-".join(w[:1].upper() + w[1:] for w in _WORD_BREAK.split(local))


def _xml_name(f: dataclasses.Field) -> str:
    clark = f.metadata.get("xml") or f.metadata["xml_attr"]
    return clark.rpartition("}")[2]


_PREFIXES = {ns: prefix for prefix, ns in m.NSMAP.items()}


def _step(f: dataclasses.Field) -> str:
    """A field's element as a path step with its canonical prefix, as `xml` names paths."""
    ns, _, local = f.metadata["xml"][1:].partition("}")
    return f"{_PREFIXES[ns]}:{local}"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _shape(cls: type, name: str) -> tuple[str, type]:
    """("one" | "opt" | "many", value type) of field `name` of a model class."""
    hint = _hints(cls)[name]
    if get_origin(hint) is tuple:
        return "many", get_args(hint)[0]
    if get_origin(hint) in (Union, types.UnionType):
        return "opt", next(a for a in get_args(hint) if a is not type(None))
    return "one", hint


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.timezone.utc)
        fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
        return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _text_value(typ: type, text: str) -> Any:
    """A header value as the model's type; ValueError when it is not one."""
    if typ is str:
        return text
    if typ is bool:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if typ is int:
        return int(text)
    if typ is dt.datetime:
        match = _DATETIME.fullmatch(text)
        if not match:
            raise ValueError(f"not a UTC date-time ending in Z: {text!r}")
        parts = [int(g) for g in match.groups()[:6]]
        micro = int((match[7] or "0").ljust(6, "0"))
        return dt.datetime(*parts, micro, tzinfo=dt.timezone.utc)
    if typ is dt.date:
        return dt.date.fromisoformat(text)
    raise ValueError(f"no header form for {typ!r}")


def _leaf_headers(obj: Any, prefix: str, skip: set[str] = frozenset()) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in skip or value is None or value == ():
            continue
        name = f"{prefix}-{_words(_xml_name(f))}"
        items = [(f"{name}-{i}", v) for i, v in enumerate(value, 1)] if isinstance(value, tuple) \
            else [(name, value)]
        for item_name, item in items:
            if dataclasses.is_dataclass(item):
                out += _leaf_headers(item, item_name)
            else:
                out.append((item_name, _value_text(item)))
    return out


def memo_headers(msg: m.Message) -> list[tuple[str, str]]:
    """The `X-MeMo-*` header fields of `msg`, in schema order (see the module docstring)."""
    prefix = HEADER_PREFIX.rstrip("-")
    out = [(f"{prefix}-{_words('memoVersion')}", msg.memo_version)]
    if msg.memo_sch_version is not None:
        out.append((f"{prefix}-{_words('memoSchVersion')}", msg.memo_sch_version))
    out += _leaf_headers(msg.message_header, prefix, _NOT_IN_HEADERS)
    if msg.message_body is not None:
        out.append((f"{prefix}-{_words('createdDateTime')}",
                    _value_text(msg.message_body.created_date_time)))
    return out


def _assign(cls: type, rest: str, value: str, tree: dict[str, Any], path: str) -> bool:
    """Put header `value` into `tree` (field name -> value | subtree | {index: subtree}) where the
    lowercase name remainder `rest` points in `cls`; False when it names no field."""
    for f in dataclasses.fields(cls):
        if f.name in _NOT_READ and cls is m.MessageHeader:
            continue
        word = _words(_xml_name(f)).lower()
        kind, typ = _shape(cls, f.name)
        step = f"{path}/{_step(f)}"
        if kind == "many":
            match = re.fullmatch(re.escape(word) + r"-(\d{1,3})-(.+)", rest)
            if match and dataclasses.is_dataclass(typ):
                sub = tree.setdefault(f.name, {}).setdefault(int(match[1]), {})
                if _assign(typ, match[2], value, sub, f"{step}[{match[1]}]"):
                    return True
            continue
        if dataclasses.is_dataclass(typ):
            if rest.startswith(word + "-") and _assign(typ, rest[len(word) + 1:], value,
                                                       tree.setdefault(f.name, {}), step):
                return True
            continue
        if rest == word:
            try:
                tree[f.name] = _text_value(typ, value)
            except ValueError as exc:
                raise MemoInvalid([ValidationError(step, f"header value not usable: {exc}",
                                                   f"feltets værdi kan ikke bruges: {exc}")]) from None
            return True
    return False


def _field_value(cls: type, f: dataclasses.Field, sub: Any, path: str) -> Any:
    kind, typ = _shape(cls, f.name)
    step = f"{path}/{_step(f)}"
    if kind == "many":
        return tuple(_build(typ, sub[i], f"{step}[{i}]") for i in sorted(sub))
    if dataclasses.is_dataclass(typ):
        return _build(typ, sub, step)
    return sub


def _build(cls: type, tree: dict[str, Any], path: str) -> Any:
    """A model value from an `_assign` tree; MemoInvalid names a missing required element."""
    values = {f.name: _field_value(cls, f, tree[f.name], path)
              for f in dataclasses.fields(cls) if f.name in tree}
    missing = [_step(f) for f in dataclasses.fields(cls)
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise MemoInvalid([ValidationError(path, f"required element missing: {', '.join(missing)}",
                                           f"påkrævet element mangler: {', '.join(missing)}")])
    return cls(**values)


# --- MeMo -> mail -----------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """A value fit for one header field and for MeMo XML: control characters (CR, LF) become
    spaces, lone surrogates (undecodable bytes) and non-characters U+FFFD."""
    return _NOT_XML.sub("\ufffd", _CONTROL.sub(" ", text)).strip()


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
            when = (f"{_value_text(r.start_date_time)} - {_value_text(r.end_date_time)} (UTC)")
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
    filename = _clean(f.filename)
    part.set_content(f.content, maintype, subtype, cte="base64", disposition=disposition,
                     filename=filename, params={"name": filename})
    if label:
        part["Content-Description"] = _clean(label)
    part["Content-Language"] = _clean(f.language)
    part[DOCUMENT_HEADER] = f"{kind} {number}"
    if doc_id:
        part[DOCUMENT_ID_HEADER] = _clean(doc_id)
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
        part["Content-Description"] = _clean(action.label)
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


def _thread_ids(msg: m.Message) -> list[str]:
    """Message-IDs named by ReplyData.messageID values that are in msg-id form, in order."""
    ids = []
    for reply in msg.message_header.reply_data:
        if reply.message_id and _MSG_ID.fullmatch(reply.message_id.strip()):
            ids.append(reply.message_id.strip())
    return ids


def memo_to_mail(msg: m.Message, memo_xml: bytes, *, from_header: str, to_header: str,
                 message_id: str, date: dt.datetime) -> bytes:
    """The RFC 5322 message a reader's client gets for `msg` (see the module docstring).

    `from_header`/`to_header` are used as given (the caller masks the parties; note that memo.xml
    carries Sender and Recipient as they are); `memo_xml` (the MeMo as received, or
    `write_memo(msg)`) is attached unchanged as memo.xml; `date` (aware) is the Date field and
    the calendar DTSTAMP.  The caller sets the IMAP keywords `memo_keywords(msg)`.
    """
    header = msg.message_header
    from_addr = _address(from_header)
    to_addr = _address(to_header)
    root = EmailMessage(policy=_OUT)
    root["From"] = from_header
    root["To"] = to_header
    root["Subject"] = _clean(header.label)
    root["Date"] = format_datetime(date.astimezone(dt.timezone.utc))
    root["Message-ID"] = message_id
    thread = _thread_ids(msg)
    if thread:  # the first ReplyData is the parent; References ends with it (RFC 5322 3.6.4)
        root["In-Reply-To"] = thread[0]
        root["References"] = " ".join(thread[1:] + thread[:1])
    if header.reply_by_date_time is not None:
        root["Reply-By"] = format_datetime(header.reply_by_date_time.astimezone(dt.timezone.utc))
    for name, value in memo_headers(msg):
        root[name] = _clean(value)
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


# --- mail -> MeMo -----------------------------------------------------------------------------------

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
    return _NOT_XML.sub("\ufffd", text)


def _header_text(part: EmailMessage, name: str) -> str | None:
    value = part.get(name)
    return _clean(str(value)) or None if value is not None else None


def _read_mail(raw: bytes) -> _ReadMail:
    msg = message_from_bytes(raw, policy=_IN)
    mail = _ReadMail(subject=_clean(str(msg.get("subject", ""))))
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
            for mid in _MSG_ID.findall(_clean(str(value))):
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
            mail.memo_fields.append((lower[len(HEADER_PREFIX):], _clean(str(value))))
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
    found = _UUID4.search(ident)
    if found:
        return found[0]
    return str(uuid.UUID(bytes=uuid.uuid5(uuid.NAMESPACE_URL, f"mid:{ident}").bytes, version=4))


def _first_line(mail: _ReadMail) -> str | None:
    text = mail.plain
    if text is None and mail.html is not None:
        text = html.unescape(re.sub(r"<[^>]*>", " ", re.sub(r"(?is)<(head|style|script).*?</\1>", "",
                                                              mail.html)))
    for line in (text or "").splitlines():
        words = _clean(line).split()
        if words:
            return _shorten(" ".join(words), NOTIFICATION_MAX)
    return None


def _file(att: _Attachment, number: int, default_language: str) -> m.File:
    media = att.media_type if len(att.media_type) <= TEXT_MAX else "application/octet-stream"
    if media == "application/octet-stream" and att.filename:
        media = mimetypes.guess_type(att.filename)[0] or media
    ext = mimetypes.guess_extension(media) or ".bin"
    return m.File(encoding_format=media, filename=_short_filename(_clean(att.filename or "") or f"bilag-{number}{ext}"),
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
    uid = event.uid if _UUID4.fullmatch(event.uid) else _uuid_for(event.uid)
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
        reply_data=tuple(m.ReplyData(message_id=mid, message_uuid=_uuid_for(mid))
                         for mid in mail.thread))
    msg = m.Message(message_header=header, message_body=body)
    return _apply_memo_fields(msg, mail.memo_fields)


def _apply_memo_fields(msg: m.Message, fields: list[tuple[str, str]]) -> m.Message:
    """`msg` with the X-MeMo-* values (name without the prefix, lowercase) put in place; unknown
    names are ignored, unusable values raise MemoInvalid naming the element."""
    top: dict[str, Any] = {}
    header_tree: dict[str, Any] = {}
    created: dt.datetime | None = None
    for name, value in fields:
        if name == "memo-version":
            top["memo_version"] = value
        elif name == "memo-sch-version":
            top["memo_sch_version"] = value
        elif name == "created-date-time":
            try:
                created = _text_value(dt.datetime, value)
            except ValueError as exc:
                raise MemoInvalid([ValidationError(
                    "/memo:Message/memo:MessageBody/memo:createdDateTime",
                    f"header value not usable: {exc}", f"feltets værdi kan ikke bruges: {exc}")]) from None
        else:
            _assign(m.MessageHeader, name, value, header_tree, "/memo:Message/memo:MessageHeader")
    header = msg.message_header
    if header_tree:
        path = "/memo:Message/memo:MessageHeader"
        header = dataclasses.replace(header, **{
            f.name: _field_value(m.MessageHeader, f, header_tree[f.name], path)
            for f in dataclasses.fields(m.MessageHeader) if f.name in header_tree})
    body = msg.message_body
    if created is not None and body is not None:
        body = dataclasses.replace(body, created_date_time=created)
    return dataclasses.replace(msg, **top, message_header=header, message_body=body)


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
        header = dataclasses.replace(header, reply_data=tuple(
            m.ReplyData(message_id=mid, message_uuid=_uuid_for(mid)) for mid in mail.thread))
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
                 now: dt.datetime) -> m.Message:
    """The MeMo for a submitted mail `raw`; it validates (`write_memo` accepts it).

    Without a memo.xml part: label = Subject (at most 256 characters, "…" when cut), notification
    = the first text line (at most 150), MainDocument = the text/plain and text/html bodies (UTF-8
    files besked.txt, besked.html; language from Content-Language, else "da") with calendar
    invitations as Reservation actions, attachments = AdditionalDocuments (encodingFormat = the
    media type; parts marked X-MeMo-Document keep their document grouping, kind, id and label),
    In-Reply-To/References = ReplyData (messageID = the msg-id, messageUUID = the UUID in it or
    one derived from it), Reply-By = replyByDateTime, then every X-MeMo-* field in its place.

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
    base = parse_memo(mail.memo_xml) if mail.memo_xml is not None else None
    if base is not None and mail.subject and mail.subject.split() != _clean(
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

"""One-pass analysis of a raw RFC 5322 message for delivery and IMAP FETCH.

Owns `analyze()`, which reads a message once at delivery and returns a
`MessageInfo`: the addresses and ids the bridge needs, the IMAP ENVELOPE
(RFC 9051 §7.5.2) and a body-structure tree from which an IMAP server answers
FETCH BODYSTRUCTURE and BODY[section] without reparsing.  Everything in it is
JSON-serialisable (it is stored in a database column).  Pure standard library:
it must not import email._header_value_parser, third-party packages, or any
project module other than `bridge.errors` and its helpers `core.mimeheader`
(header fields, parameters, RFC 2047) and `core.mimeaddr` (address lists).

Body nodes are dicts with, in this order: type, subtype (lowercase), params
([[name, value], ...], names lowercase, RFC 2231 applied), id, description,
encoding (uppercase, default "7BIT"), size (octets of the body), lines (text/*,
message/rfc822 and message/global only, else None), md5, disposition ([type,
params] or None), language (list or None), location, offsets ([header_start,
body_start, end]: byte offsets into the outer raw message, so
raw[body_start:end] is the body), then "parts" (multipart/* only, never empty)
or "message" ({"envelope", "body"}: message/rfc822 and message/global only).

Invariants an IMAP writer may rely on:
- a node has "parts" if and only if its type is "multipart";
- a node has "message" if and only if it is message/rfc822 or message/global.
A multipart without a usable boundary parameter, or in which no boundary line
is found, and a message/rfc822 or message/global part with a transfer
encoding other than 7BIT/8BIT/BINARY (so not parseable in place), become
opaque leaves of type application/octet-stream, keeping their parameters and
offsets: a client sees one attachment holding the raw bytes.  Past
`MimeLimits.max_parts` parts, the part being split runs to its multipart's end.

ENVELOPE strings are the first such field's value, unfolded and stripped,
8-bit bytes decoded as UTF-8 with replacement.  Address structures keep the
display-name as written (RFC 2047 words undecoded, quotes removed); an address
without "@" gets host "" because NIL means group syntax.

Section numbers (RFC 9051 §6.4.5), as `find_part()` resolves them:
- the parts of a multipart are numbered 1..n in `parts` order, recursively
  ("1.2" is the second part of the first part);
- a message that is not multipart has only part 1, its body node;
- the numbers after a message/rfc822 part's number address the embedded
  message exactly as if it were a top-level message ("2.1" is the first part
  of the message attached as part 2, or its whole body if not multipart).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from bridge.core.mimeaddr import addr_specs, envelope_addresses
from bridge.core.mimeheader import (
    HeaderSection, decode_words, disposition, media_type, msg_ids, read_header,
)
from bridge.errors import MalformedMessage, MimeTooDeep

_MESSAGE_SUBTYPES = ("rfc822", "global")
_IDENTITY_ENCODINGS = ("7BIT", "8BIT", "BINARY")  # RFC 2046 §5.2.1
_ENCODING = re.compile(r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)")
_DEPTH_CEILING = 100  # keeps recursion far below Python's limit
_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


@dataclass(frozen=True)
class MimeLimits:
    """Limits that make `analyze` reject a message instead of describing it."""

    # Both header limits also apply to every embedded message/rfc822 header,
    # whose address fields are parsed for its ENVELOPE.
    max_header_bytes: int = 256 * 1024  # size of the top-level header section
    max_header_count: int = 1000  # number of top-level header fields
    max_mime_depth: int = 20  # the message is depth 1; each enclosing multipart/message adds 1
    # Not a rejection: past this many body parts in all, the part being split
    # runs to the end of its multipart (as in Dovecot's max_total_mime_parts),
    # so a message of 5-byte parts cannot cost seconds and megabytes of JSON.
    max_parts: int = 10_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_mime_depth <= _DEPTH_CEILING:
            raise ValueError(f"max_mime_depth must be between 1 and {_DEPTH_CEILING}")


@dataclass(frozen=True)
class MessageInfo:
    """What `analyze` found; every field is JSON-serialisable."""

    size: int
    header_size: int  # bytes of the top-level header incl. the blank line
    message_id: str | None  # first "<...>" of Message-ID, else its stripped value
    in_reply_to: list[str]  # msg-ids "<...>"
    references: list[str]
    subject: str | None  # RFC 2047-decoded, for display/search
    from_addrs: list[str]  # lowercased addr-specs of every From field's addresses
    from_header_count: int  # how many From: header fields there are
    sender_addrs: list[str]  # of the Sender fields only (no default to From)
    to_addrs: list[str]
    cc_addrs: list[str]
    bcc_addrs: list[str]
    date: str | None  # raw Date header value
    envelope: list  # IMAP ENVELOPE as nested lists
    body: dict  # body structure tree, see the module docstring


def analyze(raw: bytes, limits: MimeLimits = MimeLimits()) -> MessageInfo:
    """Analyse `raw` (an RFC 5322 message with CRLF line endings).

    :raises MalformedMessage: if `raw` is empty or its first line is not a header field.
    :raises HeaderTooLarge, TooManyHeaders, MimeTooDeep: past a limit in `limits`.
    """
    if not raw:
        raise MalformedMessage("empty message")
    header = read_header(
        raw, 0, len(raw), strict=True,
        max_bytes=limits.max_header_bytes, max_count=limits.max_header_count,
    )
    fields = _fields(header)
    addresses = _address_lists(header, fields)
    first = _first(fields)
    return MessageInfo(
        size=len(raw), header_size=header.body_start, **_identity(fields),
        subject=_decoded(first("subject")), **_addr_specs(addresses),
        date=first("date"), envelope=_envelope(header, addresses, fields),
        body=_entity(_Walk(raw, limits), 0, header, len(raw), 1, "text", fields),
    )


def _fields(header: HeaderSection) -> dict[str, list[str]]:
    """Every field's values by name, in order (one pass instead of one per name looked up)."""
    found: dict[str, list[str]] = {}
    for name, value in header.fields:
        values = found.get(name)
        if values is None:
            found[name] = [value]
        else:
            values.append(value)
    return found


def _first(fields: dict[str, list[str]]) -> Callable[[str], str | None]:
    """A lookup like HeaderSection.first, on `_fields`."""

    def first(name: str) -> str | None:
        values = fields.get(name)
        return values[0] if values else None
    return first


def _identity(fields: dict[str, list[str]]) -> dict:
    value = _first(fields)("message-id")
    ids = msg_ids(value)
    return {
        "message_id": ids[0] if ids else (value or None),
        "in_reply_to": [i for v in fields.get("in-reply-to", ()) for i in msg_ids(v)],
        "references": [i for v in fields.get("references", ()) for i in msg_ids(v)],
    }


def _address_lists(header: HeaderSection, fields: dict[str, list[str]] | None = None) -> dict[str, list]:
    """Every address field parsed once: name -> [ENVELOPE list per field]."""
    fields = fields if fields is not None else _fields(header)
    return {name: [envelope_addresses(v) for v in fields.get(name, ())] for name in _ADDRESS_FIELDS}


def _addr_specs(lists: dict[str, list]) -> dict:
    specs = {name: [a for parsed in lists[name] for a in addr_specs(parsed)] for name in lists}
    return {
        "from_addrs": specs["from"], "from_header_count": len(lists["from"]),
        "sender_addrs": specs["sender"], "to_addrs": specs["to"],
        "cc_addrs": specs["cc"], "bcc_addrs": specs["bcc"],
    }


def _decoded(value: str | None) -> str | None:
    return None if value is None else decode_words(value)


def _envelope(header: HeaderSection, lists: dict[str, list] | None = None,
              fields: dict[str, list[str]] | None = None) -> list:
    """RFC 9051 §7.5.2 ENVELOPE of a header section, as nested lists."""
    fields = fields if fields is not None else _fields(header)
    lists = lists or _address_lists(header, fields)
    first = {name: parsed[0] if parsed else None for name, parsed in lists.items()}
    sender = first["from"]
    field = _first(fields)
    return [
        field("date"), field("subject"), sender,
        first["sender"] or _copy(sender),  # RFC 9051 §7.5.2: Sender defaults to From
        first["reply-to"] or _copy(sender),  # and so does Reply-To
        first["to"], first["cc"], first["bcc"],
        field("in-reply-to"), field("message-id"),
    ]


def _copy(addresses: list | None) -> list | None:
    return None if addresses is None else [list(a) for a in addresses]


class _Walk:
    """State of one `analyze` call: the message, the limits, the parts so far."""

    def __init__(self, raw: bytes, limits: MimeLimits) -> None:
        self.raw, self.limits, self.parts = raw, limits, 0


def _entity(walk: _Walk, start: int, header: HeaderSection, end: int,
            depth: int, default: str, fields: dict[str, list[str]] | None = None) -> dict:
    """The body node of the entity at raw[start:end] whose header is `header`."""
    if depth > walk.limits.max_mime_depth:
        raise MimeTooDeep(f"MIME structure deeper than {walk.limits.max_mime_depth}")
    node = _node(walk.raw, start, header, end, default, fields)
    if node["type"] == "multipart":
        _add_parts(walk, node, depth)
    elif node["type"] == "message" and node["subtype"] in _MESSAGE_SUBTYPES:
        _add_message(walk, node, depth)
    return node


def _node(raw: bytes, start: int, header: HeaderSection, end: int, default: str,
          fields: dict[str, list[str]] | None = None) -> dict:
    first = _first(fields if fields is not None else _fields(header))
    mtype, subtype, params = _content_type(first, default)
    disposition_ = first("content-disposition")
    body_start = header.body_start
    return {
        "type": mtype, "subtype": subtype, "params": params,
        "id": first("content-id"), "description": first("content-description"),
        "encoding": _encoding(first("content-transfer-encoding")),
        "size": end - body_start, "lines": _lines(raw, body_start, end, mtype, subtype),
        "md5": first("content-md5"),
        "disposition": _disposition(disposition_) if disposition_ is not None else None,
        "language": _language(first("content-language")),
        "location": first("content-location"),
        "offsets": [start, body_start, end],
    }


def _content_type(first: Callable[[str], str | None], default: str) -> tuple[str, str, list]:
    value = first("content-type")
    parsed = _media_type(value) if value is not None else None
    if parsed is not None:
        mtype, subtype, params = parsed
        return mtype, subtype, [list(p) for p in params]
    if default == "message":  # RFC 2046 §5.1.5: the default inside multipart/digest
        return "message", "rfc822", []
    return "text", "plain", [["charset", "us-ascii"]]  # RFC 2045 §5.2


# The same Content-Type and Content-Disposition values come back part after part (every
# text/plain; charset=utf-8, every receipt's evidence.xml and smime.p7s): parsed once, and
# each node gets fresh lists (callers may change a node).  Bounded; values are at most a
# header field long.
@functools.lru_cache(maxsize=512)
def _media_type(value: str) -> tuple[str, str, tuple[tuple[str, str], ...]] | None:
    parsed = media_type(value)
    return None if parsed is None else (parsed[0], parsed[1], tuple(tuple(p) for p in parsed[2]))


@functools.lru_cache(maxsize=512)
def _disposition_cached(value: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    parsed = disposition(value)
    return None if parsed is None else (parsed[0], tuple(tuple(p) for p in parsed[1]))


def _disposition(value: str) -> list | None:
    parsed = _disposition_cached(value)
    return None if parsed is None else [parsed[0], [list(p) for p in parsed[1]]]


def _encoding(value: str | None) -> str:
    match = _ENCODING.match(value or "")
    return match.group(1).upper() if match else "7BIT"  # RFC 2045 §6.1: default 7bit


def _lines(raw: bytes, body_start: int, end: int, mtype: str, subtype: str) -> int | None:
    if not (mtype == "text" or (mtype == "message" and subtype in _MESSAGE_SUBTYPES)):
        return None  # RFC 9051 §7.5.2: only body-type-text and body-type-msg have lines
    unterminated = end > body_start and raw[end - 1] != 0x0A
    return raw.count(b"\n", body_start, end) + unterminated


def _language(value: str | None) -> list[str] | None:
    tags = [tag.strip() for tag in (value or "").split(",") if tag.strip()]
    return tags or None  # RFC 3282: Content-Language is a comma-separated list


def _make_opaque(node: dict) -> None:
    node.update(type="application", subtype="octet-stream", lines=None)


def _add_parts(walk: _Walk, node: dict, depth: int) -> None:
    boundary = next((v for k, v in node["params"] if k == "boundary"), "")
    _header_start, body_start, end = node["offsets"]
    room = walk.limits.max_parts - walk.parts
    spans = _part_spans(walk.raw, body_start, end, boundary.encode(), room) if boundary else []
    if not spans:
        _make_opaque(node)
        return
    walk.parts += len(spans)
    default = "message" if node["subtype"] == "digest" else "text"
    node["parts"] = [
        _entity(walk, s, read_header(walk.raw, s, e), e, depth + 1, default) for s, e in spans
    ]


def _part_spans(raw: bytes, start: int, end: int, boundary: bytes, room: int) -> list[tuple]:
    """(start, end) of each body part between boundary lines (RFC 2046 §5.1.1).

    A delimiter is "--" boundary at the start of a line, optional white space,
    then the line end; the line end before it belongs to the delimiter.  The
    preamble and epilogue are not parts; without a close delimiter the last
    part runs to `end`, and so does part number `room`.
    """
    marker = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = None
    for at, after, close in _delimiters(raw, start, end, marker) if room > 0 else ():
        if part_start is not None:
            if len(spans) + 1 >= room:
                break  # MimeLimits.max_parts: the rest belongs to this part
            spans.append((part_start, max(part_start, _line_end_before(raw, at))))
        if close:  # the close delimiter ends the multipart
            return spans
        part_start = after
    return spans + [(part_start, end)] if part_start is not None else spans


_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r?\n|\Z)")


def _delimiters(raw: bytes, start: int, end: int, marker: bytes) -> Iterator[tuple[int, int, bool]]:
    """(position, end, is_close) of each delimiter line.  bytes.find, not a regex scan with a
    look-behind at every offset: a 20 MiB attachment is scanned in milliseconds."""
    pos = start
    while (at := raw.find(marker, pos, end)) >= 0:
        pos = at + 1
        if at and raw[at - 1] != 0x0A:          # must start a line
            continue
        tail = _DELIMITER_TAIL.match(raw, at + len(marker), end)
        if tail:
            yield at, tail.end(), bool(tail.group(1))


def _line_end_before(raw: bytes, pos: int) -> int:
    if raw.endswith(b"\r\n", 0, pos):
        return pos - 2
    return pos - 1 if raw.endswith(b"\n", 0, pos) else pos


def _add_message(walk: _Walk, node: dict, depth: int) -> None:
    if node["encoding"] not in _IDENTITY_ENCODINGS:
        _make_opaque(node)  # todo: decode base64/quoted-printable message/global
        return
    _header_start, body_start, end = node["offsets"]
    limits = walk.limits  # an embedded message's header gets the top-level limits too
    header = read_header(walk.raw, body_start, end,
                         max_bytes=limits.max_header_bytes, max_count=limits.max_header_count)
    body = _entity(walk, body_start, header, end, depth + 1, "text")
    node["message"] = {"envelope": _envelope(header), "body": body}


def find_part(body: dict, section: list[int]) -> dict | None:
    """The node that IMAP section `section` names (see the module docstring).

    `[]` names the message's own body node; None if no such part exists.
    """
    node, at_message = body, True
    for number in section:
        if not at_message and "message" in node:
            node, at_message = node["message"]["body"], True  # RFC 9051 §6.4.5: 4.2.2.1
        if "parts" in node:
            if not 0 < number <= len(node["parts"]):
                return None
            node, at_message = node["parts"][number - 1], False
        elif at_message and number == 1:
            at_message = False  # RFC 9051 §6.4.5: a non-multipart message has only part 1
        else:
            return None
    return node

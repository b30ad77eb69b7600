"""Taking a receipt apart for verification: the signed bytes, the signature, the evidence.

The signed part is found by scanning the raw bytes for the multipart/signed
boundary's delimiter lines (RFC 2046 §5.1.1) and returned exactly as it
stands in the file: never re-serialised through the `email` package, which
would not give back the bytes that were signed.  A file saved with bare LF
line ends is accepted too; its signed bytes come back with LF, and the
verifier canonicalises them to CRLF (RFC 8551 §3.1.1) before checking.

Only header sections are parsed with `email` (compat32, which never raises on
odd headers).  Any input, however broken or hostile, ends in a ParsedReceipt
or a ReceiptFormatError whose text says what is wrong.  Pure standard library
plus `bridge.receipts.evidence`.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass
from email.message import Message

from bridge.receipts.evidence import Evidence, EvidenceError, from_xml

MAX_RECEIPT = 1024 * 1024           # receipts are a few KB; anything bigger is not one
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_XML_TYPES = ("application/xml", "text/xml")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# RFC 2046 §5.1.1: bchars, 1 to 70 characters, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class ReceiptFormatError(ValueError):
    """The input is not a well-formed dp2bridge receipt; the text says why."""


@dataclass(frozen=True)
class ParsedReceipt:
    signed_bytes: bytes             # the first part of multipart/signed, as in the file
    signature_der: bytes            # the detached CMS signature (DER)
    evidence: Evidence              # from the evidence.xml inside the signed part
    event: str | None               # the X-DP2-Receipt header (unsigned; equals evidence.event)
    ref_message_id: str | None      # the X-DP2-Ref-Message-ID header (unsigned; equals evidence.message_id)


def parse_receipt(raw: bytes) -> ParsedReceipt:
    """Split a receipt message.  Raises ReceiptFormatError when it is not one."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ReceiptFormatError("a receipt must be given as bytes")
    raw = bytes(raw)
    if len(raw) > MAX_RECEIPT:
        raise ReceiptFormatError(f"the file is larger than {MAX_RECEIPT} bytes: not a dp2bridge receipt")
    headers, body = _split_entity(raw, "the message")
    boundary = _multipart_boundary(headers, "multipart/signed", "the message")
    protocol = (headers.get_param("protocol") or "")
    if not isinstance(protocol, str) or protocol.lower() not in _SIGNATURE_TYPES:
        raise ReceiptFormatError("multipart/signed without protocol=\"application/pkcs7-signature\": "
                                 "not an S/MIME signature")
    parts = _split_multipart(body, boundary, "multipart/signed")
    if len(parts) != 2:
        raise ReceiptFormatError(f"multipart/signed has {len(parts)} parts, not 2 (content and signature)")
    evidence = _find_evidence(parts[0])
    event, ref = _header(headers, "X-DP2-Receipt"), _header(headers, "X-DP2-Ref-Message-ID")
    _check_headers(evidence, event, ref)
    return ParsedReceipt(signed_bytes=parts[0], signature_der=_signature(parts[1]), evidence=evidence,
                         event=event, ref_message_id=ref)


def _split_entity(data: bytes, what: str) -> tuple[Message, bytes]:
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    if data.startswith((b"\r\n", b"\n")):           # no header fields at all
        return parser.parsebytes(b"\r\n", headersonly=True), data[data.index(b"\n") + 1:]
    match = _HEADER_END.search(data)
    if match is None:
        raise ReceiptFormatError(f"{what} has no end of its header section (a blank line)")
    headers = parser.parsebytes(data[:match.start()] + b"\r\n\r\n", headersonly=True)
    return headers, data[match.end():]


def _multipart_boundary(headers: Message, content_type: str, what: str) -> str:
    found = headers.get_content_type()
    if found != content_type:
        raise ReceiptFormatError(f"{what} is {found}, not {content_type}: not a signed dp2bridge receipt")
    boundary = headers.get_param("boundary")
    if isinstance(boundary, tuple):
        boundary = email.utils.collapse_rfc2231_value(boundary)
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise ReceiptFormatError(f"{what} ({content_type}) has no valid boundary parameter")
    return boundary


def _split_multipart(body: bytes, boundary: str, what: str) -> list[bytes]:
    """The body parts between the delimiter lines, each without the line break that
    precedes the next delimiter (RFC 2046 §5.1.1); LF or CRLF line ends."""
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("ascii"))
                           + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start:match.start()])
        if match.group(1):
            return parts
        start = match.end()
    if start is None:
        raise ReceiptFormatError(f"{what}: its boundary never occurs in the body")
    raise ReceiptFormatError(f"{what}: no closing boundary; the message is truncated")


def _find_evidence(signed: bytes) -> Evidence:
    headers, body = _split_entity(signed, "the signed part")
    boundary = _multipart_boundary(headers, "multipart/mixed", "the signed part")
    found = []
    for part in _split_multipart(body, boundary, "the signed multipart/mixed"):
        part_headers, part_body = _split_entity(part, "a part of the signed content")
        if _is_evidence(part_headers):
            found.append((part_headers, part_body))
    if not found:
        raise ReceiptFormatError("the signed part holds no evidence.xml")
    if len(found) > 1:
        raise ReceiptFormatError(f"the signed part holds {len(found)} evidence.xml parts, not one")
    try:
        return from_xml(_decode(*found[0]))
    except EvidenceError as exc:
        raise ReceiptFormatError(f"evidence.xml is not valid: {exc}") from None


def _is_evidence(headers: Message) -> bool:
    names = (headers.get_filename(), headers.get_param("name"))
    names = [email.utils.collapse_rfc2231_value(n) if isinstance(n, tuple) else n for n in names]
    return headers.get_content_type() in _XML_TYPES and "evidence.xml" in names


def _decode(headers: Message, body: bytes) -> bytes:
    encoding = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if encoding == "base64":
        return _base64(body, "evidence.xml")
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    if encoding in ("7bit", "8bit", "binary"):
        return body
    raise ReceiptFormatError(f"evidence.xml has an unknown Content-Transfer-Encoding {encoding!r}")


def _signature(part: bytes) -> bytes:
    headers, body = _split_entity(part, "the signature part")
    if headers.get_content_type() not in _SIGNATURE_TYPES:
        raise ReceiptFormatError(f"the second part is {headers.get_content_type()}, not "
                                 "application/pkcs7-signature")
    encoding = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    der = _base64(body, "the signature") if encoding == "base64" else body
    if not der.startswith(b"\x30"):
        raise ReceiptFormatError("the signature is not a DER-encoded CMS structure")
    return der


def _base64(body: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptFormatError(f"{what} is not valid base64") from None


def _header(headers: Message, name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else " ".join(str(value).split())


def _check_headers(evidence: Evidence, event: str | None, ref: str | None) -> None:
    """The unsigned classification headers must agree with the signed evidence."""
    if event is not None and event != evidence.event:
        raise ReceiptFormatError(f"X-DP2-Receipt says {event!r} but the signed evidence says "
                                 f"{evidence.event!r}")
    if ref is not None and ref != evidence.message_id:
        raise ReceiptFormatError(f"X-DP2-Ref-Message-ID says {ref!r} but the signed evidence says "
                                 f"{evidence.message_id!r}")

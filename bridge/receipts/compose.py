"""Building a receipt message: an S/MIME-signed mail that any client shows natively.

Shape (RFC 1847 / RFC 8551 §3.5.3 detached signature)::

    multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256
      multipart/mixed                                   <- the signed part
        multipart/report; report-type=delivery-status  (delivered, failed, rejected;
          text/plain (Danish, English)                  RFC 3464 + RFC 6522)
          message/delivery-status
        | multipart/report; report-type=disposition-notification   (read; RFC 8098)
          text/plain
          message/disposition-notification
        | text/plain                                   (accepted, handling started)
        application/xml; name="evidence.xml"            (always)
      application/pkcs7-signature; name="smime.p7s"

The signed part is everything from its first header line up to (not including)
the CRLF before the outer delimiter (RFC 2046 §5.1.1: that CRLF belongs to the
delimiter), and is exactly what `sign` receives.  It is 7-bit with CRLF line
ends throughout, so what is signed is already in canonical form.  RFC 6522
(unlike RFC 3462) lets multipart/report sit inside another multipart, as here.  A rejection
that names no recipient has no DSN part (RFC 3464 needs at least one recipient
block); its text part says what happened.  Never any content of the message.
Pure: the caller supplies `sign` (crypto/ holds the key).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Callable

from bridge.receipts import mime, texts
from bridge.receipts.evidence import Evidence, PartyRef, to_xml

_DSN_EVENTS = {"ContentConsignment": ("delivered", "2.0.0"),
               "ContentConsignmentFailure": ("failed", "5.0.0"),
               "SubmissionRejection": ("failed", "5.0.0")}
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,990}>")
_TEXT_HEADERS = ["Content-Type: text/plain; charset=utf-8", "Content-Language: da, en",
                 "Content-Transfer-Encoding: quoted-printable"]


def build_receipt(ev: Evidence, *, from_address: str, from_name: str, to_address: str, hostname: str,
                  sign: Callable[[bytes], bytes], message_id: str | None = None,
                  arrival: dt.datetime | None = None) -> bytes:
    """The complete receipt message for `ev` (RFC 5322, CRLF, ASCII only).

    `sign(data)` must return a detached DER CMS signature over `data` (SHA-256).
    `message_id` defaults to `<evidence_id@hostname>`; `arrival` (the DSN's
    Arrival-Date, when the message was accepted) defaults to the evidence time.
    Raises ValueError for a bad hostname, Message-ID or non-ASCII address.
    """
    if not _HOSTNAME.fullmatch(hostname):
        raise ValueError(f"hostname {hostname!r} is not a DNS name")
    message_id = message_id or f"<{ev.evidence_id}@{hostname}>"
    if not _MSG_ID.fullmatch(message_id):
        raise ValueError(f"message_id {message_id!r} is not a Message-ID in <>")
    # Boundaries start with "=_", which base64 and quoted-printable never produce
    # (RFC 2045 §6.7), and no delivery-status or MDN line starts with "--".
    tag = ev.evidence_id.replace("-", "")
    signed = mime.multipart("multipart/mixed", f"=_dp2m_{tag}",
                            [_main_part(ev, hostname, arrival or ev.time, tag), _evidence_part(ev)])
    signature = mime.entity(["Content-Type: application/pkcs7-signature; name=\"smime.p7s\"",
                             "Content-Transfer-Encoding: base64",
                             "Content-Disposition: attachment; filename=\"smime.p7s\""],
                            mime.base64_body(sign(signed)))
    headers = _top_headers(ev, from_address, from_name, to_address, message_id)
    body = mime.multipart('multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256',
                          f"=_dp2s_{tag}", [signed, signature], extra_headers=tuple(headers),
                          preamble=b"This is an S/MIME signed message." + mime.CRLF + mime.CRLF)
    return body + mime.CRLF


def _top_headers(ev: Evidence, from_address: str, from_name: str, to_address: str,
                 message_id: str) -> list[str]:
    return [
        f"Date: {mime.date(ev.time)}",
        *mime.mailbox("From", from_name, from_address),
        *mime.mailbox("To", "", to_address),
        *mime.unstructured("Subject", texts.subject_line(ev)),
        f"Message-ID: {message_id}",
        f"References: {ev.message_id}",                     # clients thread it with the message
        "MIME-Version: 1.0",
        "Auto-Submitted: auto-generated",                   # RFC 3834 §5: no automatic replies to it
        "X-Auto-Response-Suppress: All",                    # Exchange/Outlook: no out-of-office replies
        f"X-DP2-Receipt: {ev.event}",
        f"X-DP2-Ref-Message-ID: {ev.message_id}",
        f"X-DP2-Message-UUID: {ev.message_uuid}",
        f"X-DP2-Evidence-ID: {ev.evidence_id}",
    ]


def _main_part(ev: Evidence, hostname: str, arrival: dt.datetime, tag: str) -> bytes:
    text = mime.entity(_TEXT_HEADERS, mime.quoted_printable(texts.human_text(ev)))
    if ev.event in _DSN_EVENTS and ev.recipient is not None:
        report = mime.entity(["Content-Type: message/delivery-status"],
                             _delivery_status(ev, ev.recipient, hostname, arrival))
        return mime.multipart("multipart/report; report-type=delivery-status", f"=_dp2r_{tag}", [text, report])
    if ev.event == "ContentAccessTracking" and ev.recipient is not None:
        report = mime.entity(["Content-Type: message/disposition-notification"],
                             _disposition(ev, ev.recipient, hostname))
        return mime.multipart("multipart/report; report-type=disposition-notification", f"=_dp2r_{tag}",
                              [text, report])
    return text


def _evidence_part(ev: Evidence) -> bytes:
    return mime.entity(["Content-Type: application/xml; name=\"evidence.xml\"",
                        "Content-Disposition: attachment; filename=\"evidence.xml\"",
                        "Content-Transfer-Encoding: base64"],
                       mime.base64_body(to_xml(ev)))


def _delivery_status(ev: Evidence, recipient: PartyRef, hostname: str, arrival: dt.datetime) -> bytes:
    """RFC 3464 §2.2-2.3: per-message fields, a blank line, one recipient block."""
    action, default_status = _DSN_EVENTS[ev.event]
    per_message = [f"Reporting-MTA: dns; {hostname}",
                   f"X-DP2-Message-UUID: {ev.message_uuid}",  # RFC 3464 §2.4 extension field
                   f"Arrival-Date: {mime.date(arrival)}"]
    per_recipient = [f"Final-Recipient: {_address_field(recipient.address)}",
                     f"Action: {action}",
                     f"Status: {ev.status or default_status}"]
    if ev.reason:
        per_recipient.append(f"Diagnostic-Code: x-dp2bridge; {_ascii(ev.reason)}")
    if action == "failed":
        per_recipient.append(f"Last-Attempt-Date: {mime.date(ev.time)}")
    return _fields(per_message) + mime.CRLF + mime.CRLF + _fields(per_recipient) + mime.CRLF


def _disposition(ev: Evidence, recipient: PartyRef, hostname: str) -> bytes:
    """RFC 8098 §3.1: the disposition notification of a read message."""
    mode = ("automatic-action/MDN-sent-automatically" if ev.read_mode == "consent"
            else "manual-action/MDN-sent-manually")
    return _fields([f"Reporting-UA: {hostname}; dp2bridge",
                    f"Final-Recipient: {_address_field(recipient.address)}",
                    f"Original-Message-ID: {ev.message_id}",
                    f"Disposition: {mode}; displayed",
                    f"X-DP2-Message-UUID: {ev.message_uuid}"]) + mime.CRLF


def _fields(lines: list[str]) -> bytes:
    return mime.CRLF.join(folded.encode("ascii") for line in lines for folded in mime.fold(line))


def _address_field(address: str) -> str:
    """RFC 3464 address-type; a non-ASCII address as RFC 6533 §3 utf-8 with \\x{HEX} escapes."""
    if address.isascii():
        return f"rfc822; {address}"
    escaped = "".join(c if "\x21" <= c <= "\x7e" and c not in "\\+=" else f"\\x{{{ord(c):X}}}"
                      for c in address)
    return f"utf-8; {escaped}"


def _ascii(text: str) -> str:
    """Free text for a DSN field: printable ASCII, anything else as "?"."""
    return "".join(c if "\x20" <= c <= "\x7e" else "?" for c in text)

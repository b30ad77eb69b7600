"""The copy a recipient sees: the accepted message with its header adjusted for that reader.

Only the header section changes; the body stays byte-exact.  For each
recipient copy the bridge
  - removes Bcc and any Authentication-Results that came from outside (DESIGN.md section 3),
  - rewrites CPR directory addresses in To/Cc: the reader's own becomes the reader's
    own address, another citizen's is removed (a citizen never sees another
    citizen's CPR; authorities see CPR numbers, as in Digital Post),
  - prepends its own Received and Authentication-Results fields.
Pure functions over bytes; no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from email.utils import format_datetime, formataddr, getaddresses

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_DROP = {b"bcc", b"authentication-results"}
_ADDRESS_FIELDS = {b"to", b"cc"}


def split_header(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines and final CRLF) and the rest
    (the blank line and the body)."""
    end = raw.find(b"\r\n\r\n")
    head, rest = (raw, b"") if end < 0 else (raw[:end + 2], raw[end + 2:])
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def field_name(field: bytes) -> bytes:
    match = _FIELD_NAME.match(field)
    return match.group(1).lower() if match else b""


def render_copy(raw: bytes, *, reader_address: str, reader_directory_address: str | None,
                reader_is_authority: bool, directory_domain: str, received: bytes,
                auth_results: bytes) -> bytes:
    """`reader_directory_address`: the CPR address this copy was sent to, if any."""
    fields, rest = split_header(raw)
    out = [received, auth_results]
    cpr_domain = f"@cpr.{directory_domain}"
    for f in fields:
        name = field_name(f)
        if name in _DROP:
            continue
        if name in _ADDRESS_FIELDS and not reader_is_authority and cpr_domain.encode() in f.lower():
            f = _mask_cpr(f, reader_directory_address, reader_address, cpr_domain)
            if f is None:
                continue
        out.append(f)
    return b"".join(out) + rest


def _mask_cpr(field: bytes, own: str | None, reader_address: str, cpr_domain: str) -> bytes | None:
    """The field with CPR addresses replaced (the reader's own) or removed (anyone else's);
    None when nothing is left."""
    name, _, value = field.decode("utf-8", "replace").partition(":")
    kept = []
    for display, addr in getaddresses([value]):
        if not addr:                # group syntax, or what the parser could not read
            continue
        if not addr.lower().endswith(cpr_domain):
            kept.append(formataddr((display, addr)))
        elif own and addr.lower() == own.lower():
            kept.append(formataddr((display, reader_address)))
    if not kept:
        return None
    line = f"{name}: {', '.join(kept)}"
    if len(line) > 78:              # fold between addresses: no line over RFC 5322's limits
        line = f"{name}: " + ",\r\n\t".join(kept)
    return f"{line}\r\n".encode("utf-8")


def received_field(hostname: str, message_uuid: str, when: dt.datetime, protocol: str) -> bytes:
    with_ = {"smtp": "ESMTPSA", "imap": "IMAP"}.get(protocol, "local")
    return (f"Received: by {hostname} (dp2bridge) with {with_} id {message_uuid};\r\n"
            f"\t{format_datetime(when.astimezone(dt.timezone.utc))}\r\n").encode()


def auth_results_field(hostname: str, header_from: str, party: str | None,
                       signatures: list[str] = ()) -> bytes:
    """RFC 8601 field stating the identity the bridge verified at submission, and the result
    of each signature check (`SigResult.header_part()`, e.g. `smime=pass header.s=...`)."""
    comment = f" ({party})" if party else ""
    parts = [f"auth=pass{comment} header.from={header_from}", *signatures]
    return (f"Authentication-Results: {hostname};\r\n\t" + ";\r\n\t".join(parts) + "\r\n").encode()

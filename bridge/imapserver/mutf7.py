"""Mailbox names on the wire: UTF-8 for IMAP4rev2 / UTF8=ACCEPT sessions, modified UTF-7
(RFC 3501 section 5.1.3) for everyone else.

The store keeps names in UTF-8 (bridge/core/mailboxnames.py).  An IMAP4rev1 client
(Thunderbird, Outlook, Apple Mail, K-9, mutt, Evolution: none enables IMAP4rev2) sends
"K&AOY-re sager" for "Kære sager" and expects names back in that form, so a session
that has not enabled IMAP4rev2 or UTF8=ACCEPT (RFC 9051 section 5.1, RFC 9755) gets
every name it is sent encoded, and every name it sends decoded (`name_in`).

Decoding is strict: a "&...-" run must be modified BASE64 of UTF-16 without
printable US-ASCII inside and with zero padding bits.  Text that is not valid
modified UTF-7 (raw UTF-8 from a sloppy client, "Test&Co", or "&AC4-&AC4-", which
would spell "..") is taken literally, never decoded, so it names a folder of that
literal text and validation (mailboxnames.validate) sees exactly what is stored.
Every name the server sends encodes to valid modified UTF-7, and decodes back to
itself, so a client that echoes what it was sent always reaches the same mailbox.
"""

from __future__ import annotations

import base64
import re

_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode(name: str) -> str:
    """`name` in modified UTF-7: printable US-ASCII as is ("&" as "&-"), the rest in runs."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """The name modified UTF-7 `text` spells; ValueError if it is not valid modified UTF-7."""
    if not all(0x20 <= ord(c) <= 0x7E for c in text):
        raise ValueError("not printable US-ASCII")
    out: list[str] = []
    pos = 0
    while pos < len(text):
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:amp])
        match = _RUN.match(text, amp)
        if match is None:
            raise ValueError("unterminated or malformed & run")
        b64 = match.group(1)
        if not b64:
            out.append("&")
        else:
            raw = base64.b64decode(b64.replace(",", "/") + "=" * (-len(b64) % 4), validate=True)
            if len(raw) % 2:
                raise ValueError("odd number of UTF-16 octets")
            chars = raw.decode("utf-16-be")                # lone surrogates raise
            if any(0x20 <= ord(c) <= 0x7E for c in chars) or encode(chars) != "&" + b64 + "-":
                raise ValueError("printable US-ASCII or non-zero padding inside a run")
            out.append(chars)
        pos = match.end()
    return "".join(out)


def name_in(text: str, utf8: bool) -> str:
    """The stored name a client means by `text` (a mailbox name, reference or LIST pattern)."""
    if utf8:
        return text
    try:
        return decode(text)
    except (ValueError, UnicodeDecodeError):
        return text


def name_out(name: str, utf8: bool) -> str:
    """`name` as this session's client expects to read it."""
    return name if utf8 else encode(name)

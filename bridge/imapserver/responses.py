"""IMAP response syntax (RFC 9051 section 7 and the formal syntax): values in, bytes out.

Knows only how to write: strings as atoms, quoted strings or literals, NIL,
flag lists, and the stored ENVELOPE / BODYSTRUCTURE (bridge/core/mimeinfo.py)
as IMAP lists.  No state, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

_QUOTABLE = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}
_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")
# Printable ASCII without " and \, under 1000 characters: quoted as it is.
_PLAIN = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]{0,999}\Z')
# RFC 2231 attribute-char: what may stay unencoded in an extended parameter value.
_ATTRIBUTE_CHARS = frozenset(b"!#$&+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def nil_or_string(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def string(value: str | bytes) -> bytes:
    """A quoted string when possible, else a literal (8-bit, CR, LF, long values)."""
    if isinstance(value, str) and _PLAIN.match(value):      # the common case, one regex
        return b'"' + value.encode("ascii") + b'"'
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) < 1000 and not _UNPRINTABLE.search(raw):
        if b"\\" in raw or b'"' in raw:
            raw = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + raw + b'"'
    return literal(raw)


def quoted(value: str) -> bytes:
    """A quoted string with \\ and " escaped (only for 7-bit text without CR/LF)."""
    return b'"' + value.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(raw: bytes) -> bytes:
    return b"{%d}\r\n" % len(raw) + raw


def astring(value: str) -> bytes:
    raw = value.encode("utf-8")
    if raw and all(b in _QUOTABLE and b not in b"(){ %*]" for b in raw) and raw.upper() != b"NIL":
        return raw
    return string(raw)


def mailbox_name(name: str) -> bytes:
    """RFC 9051 mailbox names are UTF-8; quoted so clients always parse them the same way."""
    raw = name.encode("utf-8")
    if all(b in _QUOTABLE for b in raw):
        return quoted(name)
    return literal(raw)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("utf-8") + b")"


def envelope(env: list[Any]) -> bytes:
    """ENVELOPE from the stored list [date, subject, from, sender, reply_to, to, cc, bcc,
    in_reply_to, message_id]."""
    date, subject, *addresses, in_reply_to, message_id = env
    return b"(%b %b %b %b %b %b %b %b %b %b)" % (
        nil_or_string(date), nil_or_string(subject), *(_addresses(a) for a in addresses),
        nil_or_string(in_reply_to), nil_or_string(message_id))


def _addresses(value: list[list[str | None]] | None) -> bytes:
    if not value:
        return b"NIL"
    return b"(%b)" % b"".join(b"(%b)" % b" ".join([nil_or_string(x) for x in addr]) for addr in value)


def body_structure(node: dict[str, Any], extended: bool) -> bytes:
    """BODYSTRUCTURE (extended=True) or BODY (extended=False) of a stored body node."""
    if node["type"] == "multipart":
        inner = b"".join(body_structure(p, extended) for p in node["parts"])
        out = inner + b" " + string(node["subtype"].upper())
        if extended:
            out += b" " + _params(node["params"]) + b" " + _disposition(node) + b" " + \
                _language(node) + b" " + nil_or_string(node.get("location"))
        return b"(" + out + b")"
    fields = [string(node["type"].upper()), string(node["subtype"].upper()), _params(node["params"]),
              nil_or_string(node.get("id")), nil_or_string(node.get("description")),
              string(node.get("encoding") or "7BIT"), b"%d" % node["size"]]
    if "message" in node:
        fields += [envelope(node["message"]["envelope"]),
                   body_structure(node["message"]["body"], extended), b"%d" % (node.get("lines") or 0)]
    elif node["type"] == "text":
        fields.append(b"%d" % (node.get("lines") or 0))
    if extended:
        fields += [nil_or_string(node.get("md5")), _disposition(node), _language(node),
                   nil_or_string(node.get("location"))]
    return b"(" + b" ".join(fields) + b")"


def _params(params: list[list[str]] | None) -> bytes:
    """body-fld-param.  The store keeps values RFC 2231-decoded; a value that is not ASCII is
    written back in RFC 2231 form (NAME* "utf-8''Afg%C3%B8relse.pdf"), as Dovecot does, since
    IMAP4rev1 clients decode that and have no charset for 8-bit strings."""
    if not params:
        return b"NIL"
    out = []
    for key, value in params:
        raw = value.encode("utf-8")
        if all(b < 0x80 for b in raw):
            out.append(string(key.upper()) + b" " + string(raw))
        else:
            encoded = "".join(chr(b) if b in _ATTRIBUTE_CHARS else f"%{b:02X}" for b in raw)
            out.append(string(key.upper() + "*") + b" " + string("utf-8''" + encoded))
    return b"(" + b" ".join(out) + b")"


def _disposition(node: dict[str, Any]) -> bytes:
    disp = node.get("disposition")
    if not disp:
        return b"NIL"
    return b"(" + string(disp[0].upper()) + b" " + _params(disp[1]) + b")"


def _language(node: dict[str, Any]) -> bytes:
    lang = node.get("language")
    if not lang:
        return b"NIL"
    return string(lang[0]) if len(lang) == 1 else b"(" + b" ".join(string(x) for x in lang) + b")"

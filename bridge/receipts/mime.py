"""Byte-exact MIME writing for receipts: headers, encodings, multipart bodies.

Everything here produces 7-bit ASCII with CRLF line endings and lines of at
most 78 characters (76 for base64 and quoted-printable), so no MTA has a
reason to change a signed part (RFC 8551 §3.1.1: signed data must be in a
form no transport will alter).  The `email` package is used only to format
a date; bodies are written by hand so the signed bytes are exactly known.
Pure standard library.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import re

CRLF = b"\r\n"
MAX_LINE = 78
# Printable ASCII that may stand as itself in quoted-printable (RFC 2045 §6.7 rule 2).
_QP_LITERAL = frozenset(range(33, 127)) - {ord("=")}
_ASCII_PRINTABLE = re.compile(r"[\x20-\x7e]*")
# RFC 2047 §2: an encoded-word is at most 75 characters; 39 bytes of UTF-8 make 52 base64
# characters, so "=?utf-8?b?...?=" is 64 long and fits after "Subject: " within 78.
_WORD_BYTES = 39


def entity(headers: list[str], body: bytes) -> bytes:
    """A MIME entity: header lines (already folded, ASCII), a blank line, the body."""
    return CRLF.join(h.encode("ascii") for h in headers) + CRLF + CRLF + body


def multipart(content_type: str, boundary: str, parts: list[bytes], extra_headers: tuple[str, ...] = (),
              preamble: bytes = b"") -> bytes:
    """A multipart entity whose body ends with the close delimiter and no line break
    after it, so the caller decides what follows (RFC 2046 §5.1.1)."""
    headers = [*extra_headers, *fold(f"Content-Type: {content_type}; boundary=\"{boundary}\"")]
    delimiter = b"--" + boundary.encode("ascii")
    body = preamble
    for part in parts:
        body += delimiter + CRLF + part + CRLF
    return entity(headers, body + delimiter + b"--")


def fold(line: str) -> list[str]:
    """An ASCII header field folded at white space into lines of at most 78 characters
    where the words allow (RFC 5322 §2.2.3).  Refuses line breaks and non-ASCII."""
    if not _ASCII_PRINTABLE.fullmatch(line):
        raise ValueError(f"header text must be printable ASCII without line breaks: {line!r}")
    lines: list[str] = []
    current = ""
    for word in re.split(r"(?<=[ ;,])(?=\S)", line):
        if current and len(current) + len(word.rstrip()) > MAX_LINE:
            lines.append(current.rstrip())
            current = " " + word
        else:
            current += word
    return [*lines, current.rstrip()]


def encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 B-encoded UTF-8 words, none splitting a character."""
    words, chunk = [], b""
    for char in text:
        data = char.encode("utf-8", "replace")
        if len(chunk) + len(data) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words if w]


def unstructured(name: str, text: str) -> list[str]:
    """An unstructured header field (e.g. Subject): as is when it is short printable
    ASCII, else as encoded words, one per line."""
    text = " ".join(text.split())
    if _ASCII_PRINTABLE.fullmatch(text) and len(name) + 2 + len(text) <= MAX_LINE:
        return [f"{name}: {text}"]
    words = encoded_words(text) or [""]
    return [f"{name}: {words[0]}", *(f" {w}" for w in words[1:])]


def mailbox(name: str, display: str, address: str) -> list[str]:
    """An address field with one mailbox: `Name <address>`, the name quoted or encoded."""
    if not re.fullmatch(r"[\x21-\x7e]+@[\x21-\x7e]+", address) or re.search(r'[<>"\\]', address):
        raise ValueError(f"{name} address must be plain ASCII local@domain: {address!r}")
    display = " ".join(display.split())
    if not display:
        return [f"{name}: {address}"]
    if _ASCII_PRINTABLE.fullmatch(display):
        quoted = display.replace("\\", "\\\\").replace('"', '\\"')
        return fold(f'{name}: "{quoted}" <{address}>')
    words = encoded_words(display)
    lines = [f"{name}: {words[0]}", *(f" {w}" for w in words[1:])]
    if len(lines[-1]) + len(address) + 3 <= MAX_LINE:
        lines[-1] += f" <{address}>"
    else:
        lines.append(f" <{address}>")
    return lines


def date(when: dt.datetime) -> str:
    """An RFC 5322 date-time, in UTC."""
    return email.utils.format_datetime(when.astimezone(dt.timezone.utc))


def base64_body(data: bytes) -> bytes:
    """`data` in base64, 76 characters a line (RFC 2045 §6.8)."""
    return CRLF.join(base64.b64encode(data[i:i + 57]) for i in range(0, len(data), 57))


def quoted_printable(text: str) -> bytes:
    """`text` (lines ending in LF) as UTF-8 quoted-printable with CRLF line ends.
    A "." or "From " at the start of a line, or of a piece after a soft break, is encoded
    too, so no mail store or MTA rewrites it."""
    return CRLF.join(_qp_line(line.encode("utf-8", "replace")) for line in text.split("\n"))


# Bytes that quoted-printable must encode anywhere in a line (white space only at a line's
# end, "." and "From " only at its start: `_qp_line` handles those).
_QP_ENCODE = re.compile(rb"[^\t \x21-\x3c\x3e-\x7e]")
_QP_ESCAPES = {bytes([b]): b"=%02X" % b for b in range(256)}


def _qp_escape(match: re.Match[bytes]) -> bytes:
    return _QP_ESCAPES[match.group()]


def _qp_line(line: bytes) -> bytes:
    if not line:
        return b""
    enc = _QP_ENCODE.sub(_qp_escape, line)
    if line[-1] in b" \t":
        enc = enc[:-1] + _QP_ESCAPES[line[-1:]]
    if line[0] == ord(".") or line.startswith(b"From "):
        enc = _QP_ESCAPES[line[:1]] + enc[1:]
    # RFC 2045 §6.7 rule 5: at most 76 characters, a soft break "=" included.  Greedy:
    # 75 characters and "=" a line, an escape ("=" and two hex digits, the only "=" in
    # `enc`) never split; the rest goes on the last line when it fits in 76.
    # A piece after a soft break is a line of its own to a mail store or MTA: a "." or
    # "From " at its start is encoded as at a line's start.
    out: list[bytes] = []
    pos = 0
    while len(enc) - pos > 76:
        cut = pos + 75
        if enc[cut - 1] == 0x3D:
            cut -= 1
        elif enc[cut - 2] == 0x3D:
            cut -= 2
        if enc[cut] == 0x2E or enc.startswith(b"From ", cut):
            enc = enc[:cut] + _QP_ESCAPES[enc[cut:cut + 1]] + enc[cut + 1:]
        out.append(enc[pos:cut])
        pos = cut
    out.append(enc[pos:])
    return b"=\r\n".join(out)

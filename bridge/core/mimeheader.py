"""Header sections of RFC 5322 / MIME entities, for `core.mimeinfo`.

Owns: finding where an entity's header section ends and splitting it into
unfolded fields (with the top-level size and count limits), RFC 2047
encoded-word decoding, RFC 2045 / RFC 2231 parameter parsing and msg-id
extraction.  Every string it returns is decoded from UTF-8 with
errors="replace" and has NUL replaced by U+FFFD (PostgreSQL JSON columns
refuse \\u0000).  Pure standard library; imports nothing from the project but
`bridge.errors`, and never `email._header_value_parser`.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from bridge.errors import HeaderTooLarge, MalformedMessage, TooManyHeaders

# RFC 5322 §3.6.8: field-name = 1*ftext (%d33-57 / %d59-126); §4.5.3 (obsolete
# syntax) allows white space before the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_WSP = b" \t"

# RFC 2047 §2: encoded-word = "=?" charset ["*" language] "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_CHARSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,39}")
# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})(.*)", re.S)
_DISPOSITION = re.compile(rf"[ \t]*({_TOKEN})(.*)", re.S)
_PARAM = re.compile(r';[ \t]*([^\s=;"]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*(?:"|\\?\Z)|[^;]*)', re.S)
# RFC 2231 §3-4: name*<n> is section n, a trailing "*" marks a charset'lang'%XX value.
_SECTION = re.compile(r"([^*]+)(?:\*([0-9]{1,3}))?(\*)?")
_MSG_ID = re.compile(r"<[^<>]*>")


def text(data: bytes, charset: str = "utf-8") -> str:
    """Decode `data` in `charset` (UTF-8 if unknown), never raising."""
    return (_decode(data, charset) or _decode(data, "utf-8") or "").replace("\x00", "\ufffd")


def _decode(data: bytes, charset: str) -> str | None:
    if not _CHARSET.fullmatch(charset):
        return None
    try:
        return data.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None  # unknown charset, or a bytes-to-bytes codec such as "zlib"


@dataclass(frozen=True)
class HeaderSection:
    """The unfolded fields of one header section; names are lowercased."""

    fields: tuple[tuple[str, str], ...]
    body_start: int  # offset just past the blank line (or of the first body line)

    def first(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def every(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]


def read_header(
    raw: bytes, start: int, end: int, *, strict: bool = False,
    max_bytes: int = sys.maxsize, max_count: int = sys.maxsize,
) -> HeaderSection:
    """Split the header section of the entity at raw[start:end].

    The section ends at the first empty line (consumed), at the end, or at the
    first line that is neither a field nor a continuation (the body starts
    there; Python's email package does the same).  :raises MalformedMessage:
    if `strict` and the first line is not a field.  :raises HeaderTooLarge,
    TooManyHeaders: past `max_bytes` / `max_count`.
    """
    fields: list[tuple[str, list[bytes]]] = []
    pos = start
    while pos < end:
        line, nxt = _line(raw, pos, end)
        if not line:
            return _section(fields, nxt)  # RFC 5322 §2.1: an empty line ends the header
        if not _add_line(fields, line, strict, max_count):
            break
        if nxt - start > max_bytes:
            raise HeaderTooLarge(f"header section exceeds {max_bytes} bytes")
        pos = nxt
    return _section(fields, pos)


def _line(raw: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """The line at `pos` without its line ending, and the offset of the next line."""
    nl = raw.find(b"\n", pos, end)
    if nl < 0:
        return raw[pos:end], end
    return raw[pos:nl - 1 if nl > pos and raw[nl - 1] == 0x0D else nl], nl + 1


def _add_line(fields: list, line: bytes, strict: bool, max_count: int) -> bool:
    """Add a field or continuation line; False if `line` belongs to the body."""
    if line[0] in _WSP and fields:
        fields[-1][1].append(line)  # RFC 5322 §2.2.3: unfolding removes only the CRLF
        return True
    match = None if line[0] in _WSP else _FIELD_NAME.match(line)
    if match is None:
        if strict and not fields:
            raise MalformedMessage("the first line is not a header field")
        return False
    if len(fields) >= max_count:
        raise TooManyHeaders(f"more than {max_count} header fields")
    fields.append((match.group(1).decode("ascii").lower(), [line[match.end():]]))
    return True


def _section(fields: list, body_start: int) -> HeaderSection:
    unfolded = ((name, text(b"".join(parts)).strip(" \t")) for name, parts in fields)
    return HeaderSection(tuple(unfolded), body_start)


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words; undecodable words are kept as written."""
    pieces: list = []  # str, or [charset, bytearray] for a run of decoded words
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos:match.start()]
        data = _word_bytes(match.group(2), match.group(3))
        charset = match.group(1).lower()
        joins = pieces and not isinstance(pieces[-1], str) and not gap.strip(" \t\r\n")
        if data is None or _decode(b"a", charset) is None:  # b"" would skip the lookup
            pieces.append(gap + match.group(0))
        elif joins and pieces[-1][0] == charset:
            pieces[-1][1] += data  # one character may be split across two words
        else:
            pieces += ([gap] if not joins else []) + [[charset, bytearray(data)]]  # RFC 2047 §6.2
        pos = match.end()
    pieces.append(value[pos:])
    return "".join(p if isinstance(p, str) else text(bytes(p[1]), p[0]) for p in pieces)


def _word_bytes(encoding: str, encoded: str) -> bytes | None:
    data = encoded.encode("utf-8")
    try:
        if encoding in "bB":  # RFC 2047 §4.1; tolerate missing padding
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)  # RFC 2047 §4.2: "_" is a space
    except ValueError:
        return None


def media_type(value: str | None) -> tuple[str, str, list[list[str]]] | None:
    """(type, subtype, params) of a Content-Type value, None if invalid."""
    match = _MEDIA_TYPE.match(value or "")
    if match is None:
        return None  # RFC 2045 §5.2: an invalid Content-Type means the default
    return match.group(1).lower(), match.group(2).lower(), params(match.group(3))


def disposition(value: str | None) -> list | None:
    """[type, params] of a Content-Disposition value (RFC 2183), or None."""
    match = _DISPOSITION.match(value or "")
    if match is None:
        return None
    return [match.group(1).lower(), params(match.group(2))]


def params(rest: str) -> list[list[str]]:
    """The ";"-separated parameters in `rest`, RFC 2231 sections joined and decoded."""
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for match in _PARAM.finditer(rest):
        name, value = match.group(1).lower(), match.group(2)
        split = _SECTION.fullmatch(name)
        base, number, extended = split.groups() if split else (name, None, None)
        sections.setdefault(base, []).append((int(number or 0), not extended, _unquote(value)))
    return [[base, _join_sections(parts)] for base, parts in sections.items()]


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value.strip()
    inner = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
    return re.sub(r"\\(.)", r"\1", inner, flags=re.S)  # RFC 5322 §3.2.4 quoted-pair


def _join_sections(parts: list[tuple[int, bool, str]]) -> str:
    """RFC 2231 §3-4: concatenate sections in order; the first carries the charset."""
    charset, chunks, seen = "utf-8", [], set()
    for number, plain, value in sorted(parts):  # an extended section wins over a plain one
        if number in seen:
            continue
        seen.add(number)
        if not plain and number == 0 and value.count("'") >= 2:
            charset, _language, value = value.split("'", 2)  # RFC 2231 §4: charset'lang'value
        chunks.append(value.encode("utf-8") if plain else unquote_to_bytes(value))
    return text(b"".join(chunks), charset or "utf-8")


def msg_ids(value: str | None) -> list[str]:
    """Every "<...>" msg-id in a Message-ID / In-Reply-To / References value."""
    return _MSG_ID.findall(value or "")

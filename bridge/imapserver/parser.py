"""IMAP command grammar (RFC 9051 section 9, RFC 3501 section 9): bytes in, values out.

Knows only syntax: no state, no store, no I/O.  The connection reader
(server.py) assembles one command as a list of segments, alternating line text
and literal bytes (a literal's `{n}` / `{n+}` marker already consumed), and
`tokenize` turns it into a flat list of tokens:

  Atom("FETCH")        atoms, including flags (\\Seen), sequence sets and
                       section specs (BODY.PEEK[HEADER.FIELDS (FROM)]<0.10>)
  bytes                quoted strings and literals (the caller decodes)
  NIL                  the atom NIL
  OPEN / CLOSE         parenthesis markers

`Reader` walks those tokens for the command modules (`reader.atom()`,
`reader.astring()`, `reader.list()`...), raising ParseError, which the session
answers with BAD.  Nesting depth and token count are bounded so hostile input
costs bounded memory (DESIGN.md section 6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

MAX_DEPTH = 32          # parenthesis nesting
MAX_TOKENS = 100_000    # per command


class ParseError(Exception):
    """Syntax error; the text is safe to send in a BAD response."""


@dataclass(frozen=True)
class Atom:
    value: str

    def upper(self) -> str:
        return self.value.upper()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


OPEN, CLOSE, NIL = _Marker("("), _Marker(")"), _Marker("NIL")
Token = Atom | bytes | _Marker

# RFC 9051 ATOM-CHAR: any CHAR except atom-specials; "]" (resp-specials) is allowed here since
# astrings and tags may hold it, and "[" starts a section inside fetch attributes (see _atom).
# "%" and "*" are list-wildcards and appear in sequence sets ("1:*"); the command modules
# check what they accept.
_ATOM_STOP = set(b'(){ "\\\r\n') | set(range(0, 32)) | {127}
_ATOM_STOP_FLAG = _ATOM_STOP - {ord("\\")}              # "\Seen", "\*"
_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,20})([+-]?)\}\r?\n?$")


def literal_marker(line: bytes) -> tuple[int, bool] | None:
    """(size, non_synchronizing) if `line` ends with a literal marker "{n}" / "{n+}" / "~{n}"."""
    match = _LITERAL_AT_END.search(line)
    if not match:
        return None
    return int(match.group(1)), match.group(2) in (b"+", b"-")


def strip_literal_marker(line: bytes) -> bytes:
    return _LITERAL_AT_END.sub(b"", line)


def tokenize(segments: list[bytes | bytearray]) -> list[Token]:
    """Tokens of one command: even segments are line text, odd ones literal contents."""
    tokens: list[Token] = []
    depth = 0
    for index, seg in enumerate(segments):
        if index % 2:
            tokens.append(bytes(seg))
            continue
        for tok in _line_tokens(bytes(seg)):
            depth += 1 if tok is OPEN else -1 if tok is CLOSE else 0
            if depth > MAX_DEPTH:
                raise ParseError("parentheses nested too deeply")
            if depth < 0:
                raise ParseError("unbalanced parentheses")
            tokens.append(tok)
            if len(tokens) > MAX_TOKENS:
                raise ParseError("command has too many parts")
    if depth:
        raise ParseError("unbalanced parentheses")
    return tokens


def _line_tokens(line: bytes) -> Iterator[Token]:
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == 0x20:
            i += 1
        elif c == 0x28:
            yield OPEN
            i += 1
        elif c == 0x29:
            yield CLOSE
            i += 1
        elif c == 0x22:
            value, i = _quoted(line, i)
            yield value
        elif c in (0x0D, 0x0A):
            i += 1
        else:
            value, i = _atom(line, i)
            yield NIL if value.upper() == "NIL" else Atom(value)


def _quoted(line: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    i += 1
    while i < len(line):
        c = line[i]
        if c == 0x5C and i + 1 < len(line) and line[i + 1] in (0x22, 0x5C):
            out.append(line[i + 1])
            i += 2
        elif c == 0x22:
            return bytes(out), i + 1
        elif c in (0x0D, 0x0A) or c == 0x5C:
            raise ParseError("bad character in quoted string")
        else:
            out.append(c)
            i += 1
    raise ParseError("unterminated quoted string")


def _atom(line: bytes, i: int) -> tuple[str, int]:
    """An atom; a "[...]" section (with spaces and parentheses inside) and a following
    "<partial>" belong to it, as in BODY[HEADER.FIELDS (FROM TO)]<0.100>."""
    start = i
    stop = _ATOM_STOP_FLAG if line[i] == 0x5C else _ATOM_STOP
    while i < len(line) and line[i] not in stop:
        if line[i] == 0x5B:                        # "["
            end = line.find(b"]", i)
            if end < 0:
                raise ParseError("unterminated [section]")
            i = end + 1
            if i < len(line) and line[i] == 0x3C:  # "<"
                close = line.find(b">", i)
                if close < 0:
                    raise ParseError("unterminated <partial>")
                i = close + 1
            break
        i += 1
    # After a [section]<partial> the atom ends; "]" elsewhere is an ASTRING-CHAR (RFC 9051).
    if i == start:
        raise ParseError(f"unexpected character {chr(line[i])!r}")
    try:
        return line[start:i].decode("utf-8"), i
    except UnicodeDecodeError:
        raise ParseError("atom is not valid UTF-8") from None


class Reader:
    """Sequential access to a command's arguments, with grammar helpers."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def peek(self) -> Token | None:
        return None if self.at_end() else self.tokens[self.pos]

    def next(self, what: str = "argument") -> Token:
        if self.at_end():
            raise ParseError(f"missing {what}")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def atom(self, what: str = "atom") -> str:
        tok = self.next(what)
        if not isinstance(tok, Atom):
            raise ParseError(f"expected {what}")
        return tok.value

    def astring(self, what: str = "string") -> bytes:
        """atom, quoted string or literal, as bytes."""
        tok = self.next(what)
        if isinstance(tok, Atom):
            return tok.value.encode("utf-8")
        if isinstance(tok, bytes):
            return tok
        raise ParseError(f"expected {what}")

    def nstring(self, what: str = "string") -> bytes | None:
        if self.peek() is NIL:
            self.pos += 1
            return None
        return self.astring(what)

    def text(self, what: str = "string") -> str:
        try:
            return self.astring(what).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"{what} is not valid UTF-8") from None

    def number(self, what: str = "number") -> int:
        value = self.atom(what)
        if not value.isdigit() or len(value) > 20:
            raise ParseError(f"expected {what}")
        return int(value)

    def has_list(self) -> bool:
        return self.peek() is OPEN

    def list_tokens(self, what: str = "list") -> list[Token]:
        """The tokens inside the next parenthesized list (nested markers kept)."""
        if self.next(what) is not OPEN:
            raise ParseError(f"expected ({what})")
        depth, start = 1, self.pos
        while depth:
            tok = self.next(f"end of {what}")
            depth += 1 if tok is OPEN else -1 if tok is CLOSE else 0
        return self.tokens[start:self.pos - 1]

    def atoms_list(self, what: str = "list") -> list[str]:
        items = self.list_tokens(what)
        if not all(isinstance(t, Atom) for t in items):
            raise ParseError(f"{what} must contain atoms only")
        return [t.value for t in items]  # type: ignore[union-attr]


# --- sequence sets (RFC 9051 section 9: sequence-set) -------------------------------------

_SEQ_RE = re.compile(r"^(\d+|\*)(:(\d+|\*))?$")


@dataclass(frozen=True)
class SequenceSet:
    """Ranges as written; None stands for "*" (the largest number in use)."""

    ranges: tuple[tuple[int | None, int | None], ...]
    last_result: bool = False       # "$" (RFC 9051 SEARCHRES)

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Concrete ascending ranges; "*" is `largest`; reversed ranges are normalised."""
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((min(a, b), max(a, b)))
        return sorted(out)

    def contains(self, number: int, largest: int) -> bool:
        return any(lo <= number <= hi for lo, hi in self.resolve(largest))


def parse_sequence_set(text: str) -> SequenceSet:
    if text == "$":
        return SequenceSet((), last_result=True)
    ranges = []
    for part in text.split(","):
        match = _SEQ_RE.match(part)
        if not match:
            raise ParseError(f"bad sequence set {text[:40]!r}")
        lo = None if match.group(1) == "*" else int(match.group(1))
        hi_text = match.group(3) if match.group(2) else match.group(1)
        hi = None if hi_text == "*" else int(hi_text)
        if lo == 0 or hi == 0:
            raise ParseError("sequence numbers and UIDs start at 1")
        ranges.append((lo, hi))
    return SequenceSet(tuple(ranges))

"""SEARCH executed by the store (RFC 9051 section 6.4.4): criteria in, matching UIDs out.

The IMAP layer parses a command into the small tree of `Key` classes below (sequence
numbers already turned into UID ranges) and calls `search()` in a worker thread.
Each key can say what it means twice: as an SQL condition over mailbox_entries and
contents (`sql()`, None where SQL cannot say it exactly on both engines), and as a
Python test of one candidate row (`match()`).  The top-level conjuncts that have an
SQL form go into the WHERE clause; the rest filter the candidates in Python, reading
the blob only when a key needs it (HEADER, BODY, TEXT).

Every value reaches SQL as a bound parameter.  Substring tests use LIKE with `%`,
`_` and the escape character escaped (ESCAPE '\\'), so they match literally; text is
compared in lower case on both sides.  Only ASCII needles are matched in SQL (SQLite's
lower() folds ASCII only); others are matched in Python, with the same rule.
Knows nothing of IMAP syntax or sessions: no imports from imapserver/ or core/.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.errors
import email.header
import email.utils
import quopri
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true

from bridge.store import models as m

MAX_INT = 2 ** 62                   # larger numbers are clamped: BIGINT must not overflow
MAX_SQL_RANGES = 64                 # bigger UID sets are matched in Python
CHUNK = 500                         # rows read at a time for the Python-side keys
LIKE_ESCAPE = "\\"
_E, _C = m.MailboxEntry, m.Content


def like_pattern(needle: str) -> str:
    """`%needle%` with LIKE metacharacters escaped so they match themselves."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def clamp(n: int) -> int:
    return min(max(n, 0), MAX_INT)


# --- a candidate row ------------------------------------------------------------------------

@dataclass
class Row:
    uid: int
    modseq: int
    flags: str
    keywords: str
    internal_date: dt.datetime
    size: int
    sha256: str
    header_size: int
    subject: str | None
    envelope: list[Any]
    body: dict[str, Any]
    load: Callable[[str], bytes]
    _raw: bytes | None = field(default=None, repr=False)
    _texts: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.load(self.sha256)
        return self._raw

    def flag_set(self) -> set[str]:
        return {f.lower() for f in self.flags.split()}

    def keyword_set(self) -> set[str]:
        return {f.lower() for f in self.keywords.split()}

    def cached(self, name: str, make: Callable[[], list[str]]) -> list[str]:
        if name not in self._texts:
            self._texts[name] = [t.lower() for t in make()]
        return self._texts[name]


# --- keys -----------------------------------------------------------------------------------

class Key:
    def sql(self) -> ColumnElement[bool] | None:
        return None

    def match(self, row: Row) -> bool:
        raise NotImplementedError


@dataclass
class All(Key):
    def sql(self) -> ColumnElement[bool]:
        return true()

    def match(self, row: Row) -> bool:
        return True


@dataclass
class Nothing(Key):
    """RECENT and NEW: this server never reports \\Recent."""

    def sql(self) -> ColumnElement[bool]:
        return false()

    def match(self, row: Row) -> bool:
        return False


@dataclass
class Flag(Key):
    """A system flag (\\Seen...) or keyword, present or absent."""

    name: str
    present: bool = True

    def _keyword(self) -> bool:
        return not self.name.startswith("\\")

    def sql(self) -> ColumnElement[bool]:
        column = _E.keywords if self._keyword() else _E.flags
        cond = func.lower(" " + column + " ").like(like_pattern(f" {self.name.lower()} "), escape=LIKE_ESCAPE)
        return cond if self.present else not_(cond)

    def match(self, row: Row) -> bool:
        have = row.keyword_set() if self._keyword() else row.flag_set()
        return (self.name.lower() in have) == self.present


@dataclass
class Size(Key):
    larger: bool
    n: int

    def sql(self) -> ColumnElement[bool]:
        n = clamp(self.n)
        return _C.size > n if self.larger else _C.size < n

    def match(self, row: Row) -> bool:
        return row.size > self.n if self.larger else row.size < self.n


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


@dataclass
class InternalDate(Key):
    """SINCE / BEFORE / ON: the UTC day of the internal date."""

    op: str                    # "since" | "before" | "on"
    day: dt.date

    def sql(self) -> ColumnElement[bool]:
        start = _day_start(self.day)
        if self.op == "since":
            return _E.internal_date >= start
        if self.op == "before":
            return _E.internal_date < start
        if self.day >= dt.date.max:
            return _E.internal_date >= start
        return and_(_E.internal_date >= start, _E.internal_date < _day_start(self.day + dt.timedelta(days=1)))

    def match(self, row: Row) -> bool:
        return _compare(self.op, row.internal_date.astimezone(dt.timezone.utc).date(), self.day)


@dataclass
class SentDate(Key):
    """SENTSINCE / SENTBEFORE / SENTON: the Date header's own day (its time and zone are
    disregarded); the internal date's UTC day when there is no usable Date header."""

    op: str
    day: dt.date

    def match(self, row: Row) -> bool:
        return _compare(self.op, _sent_day(row), self.day)


def _compare(op: str, day: dt.date, wanted: dt.date) -> bool:
    return day >= wanted if op == "since" else day < wanted if op == "before" else day == wanted


def _sent_day(row: Row) -> dt.date:
    value = row.envelope[0] if row.envelope else None
    if isinstance(value, str):
        try:
            return email.utils.parsedate_to_datetime(value).date()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return row.internal_date.astimezone(dt.timezone.utc).date()


@dataclass
class UidSet(Key):
    """UIDs within the given inclusive ranges (sequence sets arrive here already as UIDs)."""

    ranges: list[tuple[int, int]]

    def sql(self) -> ColumnElement[bool] | None:
        if not self.ranges:
            return false()
        if len(self.ranges) > MAX_SQL_RANGES:
            return None
        return or_(*[_E.uid.between(clamp(lo), clamp(hi)) if lo != hi else _E.uid == clamp(lo)
                     for lo, hi in self.ranges])

    def match(self, row: Row) -> bool:
        return any(lo <= row.uid <= hi for lo, hi in self.ranges)


@dataclass
class ModSeq(Key):
    """RFC 7162 MODSEQ n: entries changed at or after n."""

    n: int

    def sql(self) -> ColumnElement[bool]:
        return _E.modseq >= clamp(self.n)

    def match(self, row: Row) -> bool:
        return row.modseq >= self.n


@dataclass
class Text(Key):
    """Case-insensitive substring of a field: subject, from, to, cc, bcc, header (with
    `header`), body or text."""

    where: str
    needle: str
    header: str = ""

    def __post_init__(self) -> None:
        self.lowered = self.needle.lower()

    def sql(self) -> ColumnElement[bool] | None:
        if self.where == "subject" and self.needle.isascii():
            return func.lower(_C.subject).like(like_pattern(self.lowered), escape=LIKE_ESCAPE)
        return None

    def match(self, row: Row) -> bool:
        if self.where == "subject":
            return row.subject is not None and self.lowered in row.subject.lower()
        if self.where in ("from", "to", "cc", "bcc"):
            texts = row.cached(self.where, lambda: _address_texts(row.envelope, self.where))
        elif self.where == "header":
            texts = row.cached("h:" + self.header, lambda: _header_values(row, self.header))
        elif self.where == "body":
            texts = row.cached("body", lambda: _body_texts(row))
        else:
            texts = row.cached("header", lambda: [_latin(row.raw()[:row.header_size]),
                                                   _utf8(row.raw()[:row.header_size]),
                                                   _decode_words(_utf8(row.raw()[:row.header_size]))])
            texts = texts + row.cached("body", lambda: _body_texts(row))
        return any(self.lowered in t for t in texts)


@dataclass
class Not(Key):
    key: Key

    def sql(self) -> ColumnElement[bool] | None:
        inner = self.key.sql()
        return None if inner is None else not_(inner)

    def match(self, row: Row) -> bool:
        return not self.key.match(row)


@dataclass
class Or(Key):
    left: Key
    right: Key

    def sql(self) -> ColumnElement[bool] | None:
        a, b = self.left.sql(), self.right.sql()
        return None if a is None or b is None else or_(a, b)

    def match(self, row: Row) -> bool:
        return self.left.match(row) or self.right.match(row)


@dataclass
class And(Key):
    keys: list[Key]

    def sql(self) -> ColumnElement[bool] | None:
        parts = [k.sql() for k in self.keys]
        return None if any(p is None for p in parts) else and_(true(), *parts)

    def match(self, row: Row) -> bool:
        return all(k.match(row) for k in self.keys)


# --- text extraction (Python side) ------------------------------------------------------------

_ENVELOPE_INDEX = {"from": 2, "to": 5, "cc": 6, "bcc": 7}


def _address_texts(envelope: list[Any], which: str) -> list[str]:
    """Each address as "Name <mailbox@host>", the name both as stored and decoded."""
    addresses = envelope[_ENVELOPE_INDEX[which]] if envelope and len(envelope) > 7 else None
    out = []
    for addr in addresses or []:
        name, _adl, mailbox, host = (list(addr) + [None] * 4)[:4]
        spec = f"{mailbox or ''}@{host}" if host else (mailbox or "")
        for shown in {name or "", _decode_words(name or "")}:
            out.append(f"{shown} <{spec}>" if shown else spec)
    return out


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; the value unchanged if they do not decode."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


def _utf8(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _latin(raw: bytes) -> str:
    return raw.decode("latin-1")


def _header_values(row: Row, name: str) -> list[str]:
    """The unfolded values of every field called `name` in the top-level header, as
    written and with encoded words decoded."""
    wanted = name.lower()
    out = []
    for line in _fields(row.raw()[:row.header_size]):
        colon = line.find(b":")
        if colon <= 0 or line[:colon].strip().decode("latin-1").lower() != wanted:
            continue
        value = _utf8(line[colon + 1:].replace(b"\r\n", b"").replace(b"\n", b"")).strip()
        out += [value, _decode_words(value)]
    return out


def _fields(header: bytes) -> list[bytes]:
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        elif line.strip():
            fields.append(line)
    return fields


def _body_texts(row: Row) -> list[str]:
    """The body as stored, and each text part with its transfer encoding and charset undone."""
    raw = row.raw()
    out = [_utf8(raw[row.header_size:])]
    for node in _leaves(row.body):
        if node.get("type") != "text" or "offsets" not in node:
            continue
        _, start, end = node["offsets"]
        data = _undo_encoding(raw[start:end], (node.get("encoding") or "7BIT").upper())
        charset = next((v for k, v in node.get("params") or [] if k.lower() == "charset"), "utf-8")
        try:
            out.append(data.decode(charset, "replace"))
        except LookupError:
            out.append(_utf8(data))
    return out


def _leaves(node: dict[str, Any], depth: int = 0) -> Iterable[dict[str, Any]]:
    if depth > 100:
        return
    if node.get("type") == "multipart":
        for part in node.get("parts") or []:
            yield from _leaves(part, depth + 1)
    elif "message" in node:
        yield from _leaves(node["message"]["body"], depth + 1)
    else:
        yield node


def _undo_encoding(data: bytes, encoding: str) -> bytes:
    try:
        if encoding == "BASE64":
            return base64.b64decode(data, validate=False)
        if encoding == "QUOTED-PRINTABLE":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    return data


# --- execution ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    uid: int
    modseq: int


def search(store: Any, load: Callable[[str], bytes], mailbox_id: int, key: Key, max_uid: int) -> list[Hit]:
    """Blocking: the entries of `mailbox_id` with UID <= `max_uid` that match `key`, in UID order."""
    conjuncts = key.keys if isinstance(key, And) else [key]
    in_sql = [c for c in (k.sql() for k in conjuncts) if c is not None]
    in_python = [k for k in conjuncts if k.sql() is None]
    base = (_E.mailbox_id == mailbox_id, _E.uid <= clamp(max_uid), *in_sql)
    with store.ro() as s:
        candidates = [Hit(uid, modseq) for uid, modseq in s.execute(
            select(_E.uid, _E.modseq).join(_C, _C.sha256 == _E.sha256).where(*base).order_by(_E.uid))]
    if not in_python:
        return candidates
    hits = []
    for start in range(0, len(candidates), CHUNK):       # bounded memory for large mailboxes
        part = candidates[start:start + CHUNK]
        with store.ro() as s:
            rows = s.execute(select(*_ROW_COLUMNS).join(_C, _C.sha256 == _E.sha256).where(
                _E.mailbox_id == mailbox_id, _E.uid.in_([h.uid for h in part])).order_by(_E.uid)).all()
        for r in rows:                  # outside the read transaction: blobs may be read here
            row = Row(*r, load=load)
            if all(k.match(row) for k in in_python):
                hits.append(Hit(row.uid, row.modseq))
    return hits


_ROW_COLUMNS = (_E.uid, _E.modseq, _E.flags, _E.keywords, _E.internal_date, _C.size, _C.sha256,
                _C.header_size, _C.subject, _C.envelope, _C.body)


__all__ = ["Key", "All", "Nothing", "Flag", "Size", "InternalDate", "SentDate", "UidSet", "ModSeq",
           "Text", "Not", "Or", "And", "Hit", "search", "like_pattern", "MAX_INT"]

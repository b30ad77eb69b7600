"""MeMo leaf values as text and back, and what the model's fields say about themselves.

Owns the one statement of how a MeMo value is written as text (`value_text`) and read from it
(`parse_value`), used both by `xml.py` (element text) and by the mail modules (`X-MeMo-*`
header values, which are the same text), and `fields()`: a model class's fields with their
element name, cardinality and value type, read from the metadata `model.py` puts on them.
Also the text patterns both sides share (version 4 UUID, msg-id) and `clean()`, a value made
fit for one mail header field and for XML.

Text forms (MeMo XML's): booleans `true`/`false` (read: also `1`/`0`, any case), date-times
in UTC with a trailing "Z" (`2026-12-30T12:00:00Z`, fraction only when non-zero), dates
`2026-12-01` (read: a time zone after it is dropped), longs in decimal, base64 for bytes.

Imports only `model.py` from the project; no lxml, no email.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import re
import types
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Union, get_args, get_origin, get_type_hints

from bridge.digitalpost.model import NSMAP

UUID4_PATTERN = "[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-4[a-fA-F0-9]{3}-[aAbB89][a-fA-F0-9]{3}-[a-fA-F0-9]{12}"
UUID4 = re.compile(UUID4_PATTERN)
MSG_ID = re.compile(r"<[^<>\s]+>")        # RFC 5322 msg-id, loosely: <left@right>

_PREFIX = {ns: prefix for prefix, ns in NSMAP.items()}
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z")
_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:Z|[+-]\d\d:\d\d)?")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")  # what XML 1.0 cannot carry, beyond controls


# --- values -------------------------------------------------------------------------------------

def value_text(value: Any) -> str:
    """`value` (bool, int, bytes, aware datetime, date, str) in its MeMo text form.

    Raises ValueError for a datetime without a time zone."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("date-time without a time zone; use an aware datetime")
        utc = value.astimezone(timezone.utc)
        fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
        return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def parse_value(typ: Any, text: str) -> Any:
    """`text` as a value of `typ` (str kept as it is; the others with white space stripped).

    Raises ValueError (binascii.Error is one) when `text` is not such a value, TypeError for a
    type MeMo has no text form for."""
    if typ is str:
        return text
    text = text.strip()
    if typ is bool:
        return parse_bool(text)
    if typ is int:
        return int(text)
    if typ is bytes:
        return base64.b64decode("".join(text.split()), validate=True)
    if typ is datetime:
        return parse_datetime(text)
    if typ is date:
        return parse_date(text)
    raise TypeError(f"no text form for {typ!r}")


def parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_datetime(text: str) -> datetime:
    """A memoDateTimeType value ("2024-05-03T12:00:00Z") as an aware UTC datetime."""
    m = _DATETIME.fullmatch(text)
    if not m:
        raise ValueError(f"not a UTC date-time ending in Z: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m[7] or "0")[:6].ljust(6, "0"))
    if hour == 24 and minute == second == micro == 0:  # xs:dateTime allows 24:00:00, the next day
        return datetime(year, month, day, tzinfo=timezone.utc) + timedelta(days=1)
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone.utc)


def parse_date(text: str) -> date:
    """An xs:date value; a time zone on it, if any, is dropped."""
    m = _DATE.fullmatch(text)
    if not m:
        raise ValueError(f"not a date: {text!r}")
    return date(int(m[1]), int(m[2]), int(m[3]))


def clean(text: str) -> str:
    """A value fit for one header field and for MeMo XML: control characters (CR, LF) become
    spaces, lone surrogates (undecodable bytes) and non-characters U+FFFD; stripped."""
    return _NOT_XML.sub("\ufffd", _CONTROL.sub(" ", text)).strip()


def xml_chars(text: str) -> str:
    """`text` with lone surrogates and non-characters as U+FFFD (controls kept)."""
    return _NOT_XML.sub("\ufffd", text)


# --- the model's fields ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One field of a model class, as its metadata and annotation describe it."""

    name: str
    tag: str | None        # element, Clark notation
    attr: str | None       # attribute name
    kind: str              # "one" (required), "opt", "many"
    type: Any              # the value type; for "many" the item type
    since: str | None
    v11_default: Any

    @property
    def local(self) -> str:
        """The element's (or attribute's) local name: legalNotification."""
        return (self.tag or self.attr or "").rpartition("}")[2]

    @property
    def step(self) -> str:
        """The element as a path step with its canonical prefix: memo:legalNotification."""
        return short_name(self.tag or "")


@functools.cache
def fields(cls: type) -> tuple[Field, ...]:
    """The fields of model class `cls`, in schema order."""
    hints = get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        origin = get_origin(hint)
        if origin is tuple:
            kind, typ = "many", get_args(hint)[0]
        elif origin in (Union, types.UnionType):
            kind, typ = "opt", next(a for a in get_args(hint) if a is not type(None))
        else:
            kind, typ = "one", hint
        result.append(Field(f.name, f.metadata.get("xml"), f.metadata.get("xml_attr"), kind, typ,
                            f.metadata.get("since"), f.metadata.get("v11_default")))
    return tuple(result)


def short_name(clark: str) -> str:
    """A Clark name ({ns}local) of a MeMo namespace as prefix:local."""
    if not clark.startswith("{"):
        return clark
    ns, _, local = clark[1:].partition("}")
    prefix = _PREFIX.get(ns)
    return f"{prefix}:{local}" if prefix else local

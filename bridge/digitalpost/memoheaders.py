"""The `X-MeMo-*` header naming scheme: a MeMo's header fields as mail header fields and back.

Owns `memo_headers()` (the fields a delivered MeMo carries) and `apply_memo_fields()` (a
submission's fields put into its MeMo), and the names of the per-part document fields.

Naming scheme (stable; field names are case-insensitive): one field per leaf value of
MessageHeader (except `label`, which is the Subject, and the identity elements Sender and
Recipient, which the bridge decides and the caller shows masked in From/To), plus the
`memoVersion`/`memoSchVersion` attributes and MessageBody's `createdDateTime`; a submission's
are all read back except `X-MeMo-Message-UUID` (the bridge gives the UUID).  The name is
`X-MeMo-` followed by the path of MeMo element names below MessageHeader, each element name
split at its lower-to-upper case changes into capitalised words, all joined by "-"; a repeated
element is followed by its 1-based position.  Examples: `mandatory` -> `X-MeMo-Mandatory`,
`legalNotification` -> `X-MeMo-Legal-Notification`, `ContentData/CaseID/caseSystem` ->
`X-MeMo-Content-Data-Case-ID-Case-System`, the second `ReplyData`'s `messageUUID` ->
`X-MeMo-Reply-Data-2-Message-UUID`, `memoVersion` -> `X-MeMo-Memo-Version`.  Values are the
MeMo XML text (`values.value_text`: booleans `true`/`false`, date-times
`2026-12-30T12:00:00Z`, dates `2026-12-01`).

Pure: imports model, values and xml (for MemoInvalid) only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from bridge.digitalpost import model as m
from bridge.digitalpost.values import fields, parse_value, value_text
from bridge.digitalpost.xml import MemoInvalid, ValidationError

HEADER_PREFIX = "X-MeMo-"
DOCUMENT_HEADER = "X-MeMo-Document"
DOCUMENT_ID_HEADER = "X-MeMo-Document-ID"

_WORD_BREAK = re.compile(r"(?<=[a-z])(?=[A-Z])")
_HEADER_PATH = "/memo:Message/memo:MessageHeader"
# Header fields of MessageHeader that X-MeMo-* never carries (see the module docstring).
_NOT_IN_HEADERS = {"label", "sender", "recipient"}
# ... and the one written for the reader but never taken from a submission: the bridge's UUID.
_NOT_READ = _NOT_IN_HEADERS | {"message_uuid"}


def _words(local: str) -> str:
    """A MeMo element name as header words: legalNotification -> Legal-Notification."""
    return "-".join(w[:1].upper() + w[1:] for w in _WORD_BREAK.split(local))


_PREFIX = HEADER_PREFIX.rstrip("-")


# --- MeMo -> X-MeMo-* -------------------------------------------------------------------------------

def memo_headers(msg: m.Message) -> list[tuple[str, str]]:
    """The `X-MeMo-*` header fields of `msg`, in schema order (see the module docstring)."""
    out = [(f"{_PREFIX}-{_words('memoVersion')}", msg.memo_version)]
    if msg.memo_sch_version is not None:
        out.append((f"{_PREFIX}-{_words('memoSchVersion')}", msg.memo_sch_version))
    out += _leaf_headers(msg.message_header, _PREFIX, _NOT_IN_HEADERS)
    if msg.message_body is not None:
        out.append((f"{_PREFIX}-{_words('createdDateTime')}",
                    value_text(msg.message_body.created_date_time)))
    return out


def _leaf_headers(obj: Any, prefix: str, skip: set[str] = frozenset()) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in fields(type(obj)):
        value = getattr(obj, f.name)
        if f.name in skip or value is None or value == ():
            continue
        name = f"{prefix}-{_words(f.local)}"
        items = [(f"{name}-{i}", v) for i, v in enumerate(value, 1)] if f.kind == "many" \
            else [(name, value)]
        for item_name, item in items:
            if dataclasses.is_dataclass(item):
                out += _leaf_headers(item, item_name)
            else:
                out.append((item_name, value_text(item)))
    return out


# --- X-MeMo-* -> MeMo -------------------------------------------------------------------------------

def apply_memo_fields(msg: m.Message, found: list[tuple[str, str]]) -> m.Message:
    """`msg` with the X-MeMo-* values `found` (name without the prefix, lowercase) put in place;
    unknown names are ignored, unusable values raise MemoInvalid naming the element."""
    top: dict[str, Any] = {}
    header_tree: dict[str, Any] = {}
    created: dt.datetime | None = None
    for name, value in found:
        if name == "memo-version":
            top["memo_version"] = value
        elif name == "memo-sch-version":
            top["memo_sch_version"] = value
        elif name == "created-date-time":
            created = _usable(dt.datetime, value, "/memo:Message/memo:MessageBody/memo:createdDateTime")
        else:
            _assign(m.MessageHeader, name, value, header_tree, _HEADER_PATH)
    header = msg.message_header
    if header_tree:
        header = dataclasses.replace(header, **{
            f.name: _field_value(f, header_tree[f.name], _HEADER_PATH)
            for f in fields(m.MessageHeader) if f.name in header_tree})
    body = msg.message_body
    if created is not None and body is not None:
        body = dataclasses.replace(body, created_date_time=created)
    return dataclasses.replace(msg, **top, message_header=header, message_body=body)


def _usable(typ: type, value: str, path: str) -> Any:
    """`value` as `typ`; MemoInvalid naming `path` when it is not one."""
    try:
        return parse_value(typ, value)
    except (TypeError, ValueError) as exc:
        raise MemoInvalid([ValidationError(path, f"header value not usable: {exc}",
                                           f"feltets værdi kan ikke bruges: {exc}")]) from None


def _assign(cls: type, rest: str, value: str, tree: dict[str, Any], path: str) -> bool:
    """Put header `value` into `tree` (field name -> value | subtree | {index: subtree}) where the
    lowercase name remainder `rest` points in `cls`; False when it names no field."""
    for f in fields(cls):
        if f.name in _NOT_READ and cls is m.MessageHeader:
            continue
        word = _words(f.local).lower()
        step = f"{path}/{f.step}"
        if f.kind == "many":
            match = re.fullmatch(re.escape(word) + r"-(\d{1,3})-(.+)", rest)
            if match and dataclasses.is_dataclass(f.type):
                sub = tree.setdefault(f.name, {}).setdefault(int(match[1]), {})
                if _assign(f.type, match[2], value, sub, f"{step}[{match[1]}]"):
                    return True
            continue
        if dataclasses.is_dataclass(f.type):
            if rest.startswith(word + "-") and _assign(f.type, rest[len(word) + 1:], value,
                                                       tree.setdefault(f.name, {}), step):
                return True
            continue
        if rest == word:
            tree[f.name] = _usable(f.type, value, step)
            return True
    return False


def _field_value(f: Any, sub: Any, path: str) -> Any:
    step = f"{path}/{f.step}"
    if f.kind == "many":
        return tuple(_build(f.type, sub[i], f"{step}[{i}]") for i in sorted(sub))
    if dataclasses.is_dataclass(f.type):
        return _build(f.type, sub, step)
    return sub


def _build(cls: type, tree: dict[str, Any], path: str) -> Any:
    """A model value from an `_assign` tree; MemoInvalid names a missing required element."""
    values = {f.name: _field_value(f, tree[f.name], path) for f in fields(cls) if f.name in tree}
    missing = [f.step for f in fields(cls) if f.name not in values and f.kind == "one"]
    if missing:
        raise MemoInvalid([ValidationError(path, f"required element missing: {', '.join(missing)}",
                                           f"påkrævet element mangler: {', '.join(missing)}")])
    return cls(**values)

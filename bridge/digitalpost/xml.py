"""MeMo XML in and out: `parse_memo`, `write_memo`, `validate`, with `MemoInvalid` for refusals.

Owns the XML side of MeMo: a hardened lxml parser (no DTD, no entities, no network), validation
against the MeMo 1.1 XSD shipped in `schema/1.1/` and against MeMo 1.2's rules, and the mapping
between XML and the dataclasses of `model.py`, which it reads from the fields' metadata.

MeMo 1.2 has no public schema.  Its rules here are the 1.1 schema, with all its limits (label and
other texts at most 256 characters, notification 150, comment 512, UUIDs of version 4, date-times
in UTC with a trailing "Z", element order and cardinality), changed in the four places where 1.2
documents differ (see `_schema_1_2`).  Every error names the element by its path with the
canonical prefixes, e.g. `/memo:Message/memo:MessageHeader/memo:label`, whatever prefixes the
document used, and says what is wrong in English and in Danish.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lxml import etree

from bridge.digitalpost.model import MEMO_NS, NSMAP, Message
from bridge.digitalpost.values import UUID4_PATTERN, fields, parse_value, value_text
from bridge.errors import BridgeError

SCHEMA_DIR = Path(__file__).parent / "schema"
VERSIONS = ("1.1", "1.2")
DEFAULT_SCH_VERSION = "1.1.0"  # memoSchVersion written for 1.1 when the message has none

_XS = "{http://www.w3.org/2001/XMLSchema}"
_PREFIX = {ns: prefix for prefix, ns in NSMAP.items()}
_ROOT = f"{{{MEMO_NS}}}Message"


@dataclass(frozen=True)
class ValidationError:
    """One problem in a MeMo document: where (`path`) and what, in English and Danish."""

    path: str
    message: str
    message_da: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class MemoInvalid(BridgeError):
    """A MeMo document or message that cannot be accepted; `errors` says where and why."""

    public = "the MeMo message is not valid (MeMo-meddelelsen er ikke gyldig)"
    temporary = False
    enhanced = "5.6.0"

    def __init__(self, errors: list[ValidationError] | tuple[ValidationError, ...]) -> None:
        self.errors: tuple[ValidationError, ...] = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors[:20]))


# --- public API ---------------------------------------------------------------------------------

def parse_memo(data: bytes) -> Message:
    """The Message in `data`, checked by the rules of its own `memoVersion` (1.1 XSD, else 1.2).

    Raises MemoInvalid for anything that is not a valid MeMo, DTDs and entities included.
    """
    root = _load(data)
    errors = _schema_errors(_canonical(root), _rules_for(root.get("memoVersion")))
    if errors:
        raise MemoInvalid(errors)
    return _read(Message, root, "/memo:Message")


def write_memo(msg: Message, version: str | None = None) -> bytes:
    """`msg` as MeMo XML (UTF-8, `memo:` prefix, schema order), checked before it is returned.

    `version` is "1.1" or "1.2"; None writes `msg.memo_version` as it is, by its rules.  As 1.1,
    the 1.2-only fields (Sender.representative, ForwardData.original_representative) are left
    out, `mandatory`/`legalNotification` are written as false when None, and `memoSchVersion`
    is `msg.memo_sch_version` or "1.1.0".  Raises MemoInvalid (paths as in `validate`) when the
    message breaks the schema, e.g. a label over 256 characters.
    """
    if version is not None and version not in VERSIONS:
        raise ValueError(f"MeMo version must be one of {VERSIONS}, not {version!r}")
    rules = version or _rules_for(msg.memo_version)
    errors: list[ValidationError] = []
    root = etree.Element(_ROOT, nsmap=NSMAP)
    root.set("memoVersion", version or msg.memo_version)
    if rules == "1.1":
        root.set("memoSchVersion", msg.memo_sch_version or DEFAULT_SCH_VERSION)
    elif msg.memo_sch_version is not None:
        root.set("memoSchVersion", msg.memo_sch_version)
    _write_children(msg, root, "/memo:Message", rules, errors)
    if errors:
        raise MemoInvalid(errors)
    etree.cleanup_namespaces(root, top_nsmap={"memo": MEMO_NS})
    errors = _schema_errors(root, rules)
    if errors:
        raise MemoInvalid(errors)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(
        root, encoding="UTF-8", xml_declaration=False, pretty_print=True)


def validate(data: bytes, version: str | None = None) -> list[ValidationError]:
    """Every problem found in `data` by the rules of `version` (None: the document's memoVersion).

    An empty list means valid, and that `parse_memo` would succeed when the version is the
    document's own.  Never raises for bad input.
    """
    if version is not None and version not in VERSIONS:
        raise ValueError(f"MeMo version must be one of {VERSIONS}, not {version!r}")
    try:
        root = _load(data)
        errors = _schema_errors(_canonical(root), version or _rules_for(root.get("memoVersion")))
        if not errors:
            _read(Message, root, "/memo:Message")  # values the schema allows but Python cannot hold
    except MemoInvalid as exc:
        return list(exc.errors)
    return errors


# --- parsing, hardened -------------------------------------------------------------------------------

def _load(data: bytes) -> etree._Element:
    """The root element of `data`; refuses DTDs, entities and anything not well-formed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("MeMo XML must be bytes")
    data = bytes(data)
    parser = etree.XMLParser(
        resolve_entities=False, load_dtd=False, dtd_validation=False, no_network=True,
        huge_tree=True,  # base64 content beyond libxml2's 10 MB text limit; DTDs are refused below
        collect_ids=False, remove_comments=False,
    )
    try:
        tree = etree.ElementTree(etree.fromstring(data, parser))
    except etree.XMLSyntaxError as exc:
        if _mentions_dtd(data[:8192]):
            raise MemoInvalid([_dtd_error()]) from None
        raise MemoInvalid([ValidationError(
            "/", f"not well-formed XML (line {exc.lineno}): {exc.msg}",
            f"ikke velformet XML (linje {exc.lineno}): {exc.msg}", exc.lineno)]) from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:  # entities need a DTD
        raise MemoInvalid([_dtd_error()])
    return tree.getroot()


def _mentions_dtd(head: bytes) -> bool:
    """Whether a document that failed to parse starts with a DTD, in any encoding XML allows."""
    for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        text = head.decode(codec, errors="ignore")
        if "<!DOCTYPE" in text or "<!ENTITY" in text:
            return True
    return False


def _dtd_error() -> ValidationError:
    return ValidationError("/", "DTDs and entity declarations are not allowed in MeMo",
                           "DTD'er og entitetserklæringer er ikke tilladt i MeMo")


def _rules_for(memo_version: str | None) -> str:
    """Which rules a document follows: "1.1" when its memoVersion is 1.1 (numerically), else "1.2"."""
    try:
        return "1.1" if memo_version is not None and Decimal(memo_version.strip()) == Decimal("1.1") \
            else "1.2"
    except InvalidOperation:
        return "1.2"


def _canonical(root: etree._Element) -> etree._Element:
    """A copy of the tree with the canonical prefixes (memo:, grd:, ...), so error paths read alike.

    Comments and processing instructions are dropped (their tails kept); source lines are kept.
    Iterative: hostile documents may nest deeper than Python's recursion limit.
    """
    copy = etree.Element(root.tag, nsmap=NSMAP)
    stack = [(root, copy)]
    while stack:
        src, dst = stack.pop()
        dst.attrib.update(src.attrib)
        dst.text = src.text
        dst.sourceline = src.sourceline
        last: etree._Element | None = None
        for child in src:
            if isinstance(child.tag, str):
                last = etree.SubElement(dst, child.tag)
                last.tail = child.tail
                stack.append((child, last))
            elif child.tail:
                if last is None:
                    dst.text = (dst.text or "") + child.tail
                else:
                    last.tail = (last.tail or "") + child.tail
    return copy


# --- schemas ---------------------------------------------------------------------------------------

@functools.cache
def _schema(rules: str) -> tuple[etree.XMLSchema, threading.Lock]:
    tree = etree.parse(str(SCHEMA_DIR / "1.1" / "MeMo_core.xsd"),
                       etree.XMLParser(resolve_entities=False, no_network=True))
    if rules == "1.2":
        _schema_1_2(tree)
    return etree.XMLSchema(tree), threading.Lock()


def _schema_1_2(tree: etree._ElementTree) -> None:
    """Turn the 1.1 core schema into the 1.2 rules, in place.

    The changes are those seen in Digital Post's 1.2 examples: memoSchVersion is gone (accepted,
    not required); mandatory and legalNotification are optional; Sender ends with an optional
    Representative (representativeID, idType, label?); ForwardData has an optional
    originalRepresentative after originalContentResponsible.
    """
    xsd = tree.getroot()
    xsd.set("version", "1.2")

    def declared(name: str) -> etree._Element:
        return xsd.find(f"{_XS}element[@name='{name}']")

    declared("Message").find(f".//{_XS}attribute[@name='memoSchVersion']").set("use", "optional")
    for name in ("mandatory", "legalNotification"):
        declared("MessageHeader").find(f".//{_XS}element[@name='{name}']").set("minOccurs", "0")
    etree.SubElement(declared("Sender").find(f".//{_XS}sequence"), f"{_XS}element",
                     ref="Representative", minOccurs="0")
    representative = etree.SubElement(xsd, f"{_XS}element", name="Representative")
    sequence = etree.SubElement(etree.SubElement(representative, f"{_XS}complexType"), f"{_XS}sequence")
    for name, optional in (("representativeID", False), ("idType", False), ("label", True)):
        element = etree.SubElement(sequence, f"{_XS}element", name=name, type="dt:memoTextType")
        if optional:
            element.set("minOccurs", "0")
    after = declared("ForwardData").find(f".//{_XS}element[@name='originalContentResponsible']")
    after.addnext(etree.Element(f"{_XS}element", name="originalRepresentative",
                                type="dt:memoTextType", minOccurs="0"))


def _schema_errors(root: etree._Element, rules: str) -> list[ValidationError]:
    schema, lock = _schema(rules)
    with lock:
        if schema.validate(etree.ElementTree(root)):
            return []
        entries = list(schema.error_log)
    errors: list[ValidationError] = []
    for entry in entries:
        error = _explain(entry)
        # libxml2 follows a facet error with "not a valid value of the atomic type": say it once.
        if errors and errors[-1].path == error.path and entry.type_name.startswith(
                "SCHEMAV_CVC_DATATYPE_VALID") and "[facet" not in entry.message:
            continue
        errors.append(error)
    return errors


_CLARK = re.compile(r"\{([a-z]+:[^}]*)\}")


def _short(text: str) -> str:
    """Clark names ({ns}local) as prefix:local."""
    def prefixed(match: re.Match[str]) -> str:
        prefix = _PREFIX.get(match.group(1)) or ("xs" if "XMLSchema" in match.group(1) else "")
        return f"{prefix}:" if prefix else ""
    return _CLARK.sub(prefixed, text)


def _explain(entry: Any) -> ValidationError:
    """A libxml2 schema error as a plain ValidationError (English and Danish)."""
    path = entry.path or "/"
    text = _short(entry.message)
    detail = re.sub(r"^Element '[^']*'(?:, attribute '[^']*')?: ", "", text)
    en, da = detail, f"ugyldigt indhold: {detail}"
    if m := re.search(r"length of '(\d+)'; this exceeds the allowed maximum length of '(\d+)'", detail):
        en = f"too long: {m[1]} characters, at most {m[2]} allowed"
        da = f"for lang: {m[1]} tegn, højst {m[2]} tilladt"
    elif m := re.search(r"The value '(.*)' is not accepted by the pattern '(.*)'", detail, re.S):
        if m[2] == UUID4_PATTERN:
            en, da = f"not a version 4 UUID: '{m[1]}'", f"ikke et UUID af version 4: '{m[1]}'"
        elif m[2] == ".+Z":
            en = f"date-time must be in UTC with a trailing 'Z': '{m[1]}'"
            da = f"tidspunktet skal være i UTC og slutte med 'Z': '{m[1]}'"
    elif m := re.search(r"The value '(.*)' is not an element of the set \{(.*)\}", detail, re.S):
        en, da = f"'{m[1]}' is not one of {m[2]}", f"'{m[1]}' er ikke en af {m[2]}"
    elif m := re.search(r"The value '(.*)' is greater than the maximum value allowed \('(.*)'\)", detail):
        en, da = f"'{m[1]}' is larger than {m[2]}", f"'{m[1]}' er større end {m[2]}"
    elif m := re.search(r"This element is not expected\. Expected is(?: one of)? \( (.*) \)", detail):
        en = f"element not allowed here (wrong order or unknown); expected {m[1]}"
        da = f"elementet er ikke tilladt her (forkert rækkefølge eller ukendt); forventet {m[1]}"
    elif "This element is not expected" in detail:
        en = "element not allowed here (wrong order, unknown, or too many)"
        da = "elementet er ikke tilladt her (forkert rækkefølge, ukendt eller for mange)"
    elif m := re.search(r"Missing child element\(s\)\. Expected is(?: one of)? \( (.*) \)", detail):
        en, da = f"required element missing: {m[1]}", f"påkrævet element mangler: {m[1]}"
    elif m := re.search(r"The attribute '(.*)' is required but missing", detail):
        en, da = f"required attribute missing: {m[1]}", f"påkrævet attribut mangler: {m[1]}"
    elif "No matching global declaration available for the validation root" in detail:
        en = "not a MeMo message: the root element must be memo:Message"
        da = "ikke en MeMo-meddelelse: rodelementet skal være memo:Message"
    elif m := re.search(r"'(.*)' is not a valid value of the (?:atomic|local atomic) type '(.*)'", detail,
                        re.S):
        en, da = f"'{m[1]}' is not a valid {m[2]}", f"'{m[1]}' er ikke en gyldig {m[2]}"
    return ValidationError(path, en, da, entry.line or None)


# --- XML -> model ------------------------------------------------------------------------------------

def _child_path(path: str, tag: str, index: int, count: int) -> str:
    step = _short(tag)
    return f"{path}/{step}[{index}]" if count > 1 else f"{path}/{step}"


def _read(cls: type, element: etree._Element, path: str) -> Any:
    children = [c for c in element if isinstance(c.tag, str)]
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.attr is not None:
            if element.get(f.attr) is not None:
                values[f.name] = element.get(f.attr)
            continue
        found = [c for c in children if c.tag == f.tag]
        items = tuple(_read_value(f.type, c, _child_path(path, f.tag, i, len(found)))
                      for i, c in enumerate(found, 1))
        if f.kind == "many":
            values[f.name] = items
        elif items:
            values[f.name] = items[0]
        elif f.kind == "one":
            raise MemoInvalid([ValidationError(path, f"required element missing: {_short(f.tag)}",
                                               f"påkrævet element mangler: {_short(f.tag)}")])
    return cls(**values)


def _read_value(typ: Any, element: etree._Element, path: str) -> Any:
    if dataclasses.is_dataclass(typ):
        return _read(typ, element, path)
    # A leaf: its text, ignoring any comments inside it.
    text = (element.text or "") + "".join(c.tail or "" for c in element)
    try:
        return parse_value(typ, text)
    except ValueError as exc:                 # binascii.Error is a ValueError
        raise MemoInvalid([ValidationError(path, f"unusable value: {exc}",
                                           f"værdien kan ikke bruges: {text.strip()!r}",
                                           element.sourceline)]) from None


# --- model -> XML ------------------------------------------------------------------------------------

def _write_children(obj: Any, element: etree._Element, path: str, rules: str,
                    errors: list[ValidationError]) -> None:
    for f in fields(type(obj)):
        if f.attr is not None or (f.since == "1.2" and rules == "1.1"):
            continue
        value = getattr(obj, f.name)
        if value is None and rules == "1.1" and f.v11_default is not None:
            value = f.v11_default
        if f.kind == "many" and not isinstance(value, (tuple, list)):
            errors.append(ValidationError(
                _child_path(path, f.tag, 1, 1), f"expected a tuple, got {type(value).__name__}",
                f"forventede en tuple, fik {type(value).__name__}"))
            continue
        items = value if f.kind == "many" else (() if value is None else (value,))
        if f.kind == "one" and value is None:
            errors.append(ValidationError(path, f"required element missing: {_short(f.tag)}",
                                          f"påkrævet element mangler: {_short(f.tag)}"))
        for index, item in enumerate(items, 1):
            child = etree.SubElement(element, f.tag)
            child_path = _child_path(path, f.tag, index, len(items))
            if dataclasses.is_dataclass(f.type):
                if not isinstance(item, f.type):
                    errors.append(_type_error(child_path, f.type, item))
                    continue
                _write_children(item, child, child_path, rules, errors)
            else:
                try:
                    child.text = _text(f.type, item)
                except (TypeError, ValueError) as exc:
                    errors.append(ValidationError(child_path, str(exc), f"ugyldig værdi: {exc}"))


def _type_error(path: str, typ: Any, value: Any) -> ValidationError:
    text = f"expected {typ.__name__}, got {type(value).__name__}"
    return ValidationError(path, text, f"forventede {typ.__name__}, fik {type(value).__name__}")


def _text(typ: Any, value: Any) -> str:
    """`value` as element text, when it is of the field's type `typ` (TypeError if not)."""
    if typ is str and isinstance(value, str):
        etree.Element("x").text = value  # raises ValueError for characters XML cannot carry
        return value
    fits = {bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            bytes: isinstance(value, (bytes, bytearray)),
            datetime: isinstance(value, datetime),
            date: isinstance(value, date) and not isinstance(value, datetime)}
    if fits.get(typ, False):
        return value_text(value)              # ValueError for a datetime without a time zone
    raise TypeError(f"expected {typ.__name__}, got {type(value).__name__}")

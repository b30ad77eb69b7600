"""The evidence document of a receipt (`evidence.xml`) and its value object.

Owns `Evidence` (what a receipt attests), its XML form (`to_xml`) and the
strict reading of that form (`from_xml`).  Event names follow ETSI EN 319 522-2
(SubmissionAcceptance, SubmissionRejection, ContentConsignment,
ContentConsignmentFailure, ContentAccessTracking) plus our own HandlingStarted;
the fields are those of an ETSI evidence (identifier, event, time, issuer,
sender and recipient details, message identifiers, digest of the content) and of
Italy's PEC `daticert.xml` (RFC 6109: tipo, mittente, destinatari, msgid,
oggetto, gestore-emittente), plus the audit-trail link (chain, seq, hash).

XML: namespace `urn:dp2bridge:evidence:1`, root `<Evidence version="1">`, one
child element per field (an optional field that is None is left out), times
as `YYYY-MM-DDThh:mm:ss.ffffffZ`.  Reading refuses DTDs (so no entity
expansion), unknown or repeated elements, unknown events and missing required
elements, each with a clear `EvidenceError`.

Free-text fields (names, subject, reason, handler) are normalised on creation
so that they survive XML: line breaks become spaces, and characters XML 1.0
cannot carry (other control characters, lone surrogates) become U+FFFD.  So
`from_xml(to_xml(ev)) == ev` for every `Evidence`.

Pure standard library; imports nothing from the project.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields

EVENTS = (
    "SubmissionAcceptance",
    "SubmissionRejection",
    "ContentConsignment",
    "ContentConsignmentFailure",
    "ContentAccessTracking",
    "HandlingStarted",
)
NS = "urn:dp2bridge:evidence:1"
VERSION = "1"
READ_MODES = ("consent", "mdn")
MAX_XML = 256 * 1024

# Events about one recipient's copy: they must name the recipient.
_NEEDS_RECIPIENT = ("ContentConsignment", "ContentConsignmentFailure", "ContentAccessTracking")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
# A mail address as the bridge stores it: local@domain, no white space, controls or <>".
_ADDRESS = re.compile(r'[^\s<>"\x00-\x1f\x7f]{1,256}@[^\s<>"@\x00-\x1f\x7f]{1,255}')
_HEX64 = re.compile(r"[0-9a-f]{64}")
# RFC 3463 §2: status-code = class "." subject "." detail
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
# RFC 5322 §3.6.4 msg-id, printable ASCII without white space, as the store keeps it.
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,990}>")
# XML 1.0 §2.2 Char, minus CR and LF (which XML parsers normalise).
_NOT_XML_TEXT = re.compile("[^\t\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LINE_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class EvidenceError(ValueError):
    """An evidence value or document is not valid; the text says which field and why."""


def clean_text(value: str) -> str:
    """`value` made safe for a one-line XML text: breaks to spaces, the rest to U+FFFD."""
    return _NOT_XML_TEXT.sub("\ufffd", _LINE_BREAKS.sub(" ", value))


@dataclass(frozen=True)
class PartyRef:
    """A sender or recipient: mail address, display name and (masked) legal party id."""

    address: str
    name: str = ""
    party: str | None = None      # e.g. "cvr:12345678" or "cpr:010170-****"; the caller masks

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not _ADDRESS.fullmatch(self.address):
            raise EvidenceError(f"party address {self.address!r} is not a mail address")
        object.__setattr__(self, "name", clean_text(_text("name", self.name)))
        if self.party is not None:
            object.__setattr__(self, "party", clean_text(_text("party", self.party)))


@dataclass(frozen=True)
class Evidence:
    """What one receipt attests.  Validated on creation; see the module docstring."""

    evidence_id: str              # uuid4, canonical lower-case text
    event: str                    # one of EVENTS
    time: dt.datetime             # aware; stored as UTC
    issuer: str                   # tenant whose evidence key signs
    issuer_name: str              # its display name
    sender: PartyRef
    recipient: PartyRef | None
    message_uuid: str
    message_id: str               # RFC 5322 Message-ID with <>
    sha256: str                   # hex SHA-256 of the message exactly as accepted
    delivered_sha256: str | None  # the recipient's copy (ContentConsignment)
    audit_chain: str
    audit_seq: int
    audit_hash: str
    status: str | None = None     # RFC 3463 status, e.g. "2.0.0", "5.1.1"
    reason: str | None = None     # English reason (failure, rejection)
    handler: str | None = None    # contact point name (HandlingStarted)
    handler_person: str | None = None
    read_mode: str | None = None  # "consent" | "mdn" (ContentAccessTracking)
    subject: str | None = None    # the original subject
    signature: str | None = None  # what the bridge verified of the message's signature, as in its
                                  # Authentication-Results, e.g. "smime=pass header.s=anna@..."

    def __post_init__(self) -> None:
        _check_uuid("evidence_id", self.evidence_id)
        _check_uuid("message_uuid", self.message_uuid)
        if self.event not in EVENTS:
            raise EvidenceError(f"unknown evidence event {self.event!r}; known: {', '.join(EVENTS)}")
        object.__setattr__(self, "time", _utc(self.time))
        self._check_identifiers()
        self._check_event_fields()
        for name in ("issuer_name", "audit_chain", "issuer", "reason", "handler", "handler_person",
                     "subject", "signature"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, clean_text(_text(name, value)))
        if not self.issuer or not self.audit_chain:
            raise EvidenceError("issuer and audit_chain must not be empty")

    def _check_identifiers(self) -> None:
        if not isinstance(self.sender, PartyRef):
            raise EvidenceError("sender must be a PartyRef")
        if self.recipient is not None and not isinstance(self.recipient, PartyRef):
            raise EvidenceError("recipient must be a PartyRef or None")
        if not isinstance(self.message_id, str) or not _MSG_ID.fullmatch(self.message_id):
            raise EvidenceError(f"message_id {self.message_id!r} is not a Message-ID in <>")
        for name in ("sha256", "audit_hash", "delivered_sha256"):
            value = getattr(self, name)
            if (value is not None or name != "delivered_sha256") and not (
                    isinstance(value, str) and _HEX64.fullmatch(value)):
                raise EvidenceError(f"{name} must be 64 lower-case hex digits, not {value!r}")
        if type(self.audit_seq) is not int or self.audit_seq < 0:
            raise EvidenceError(f"audit_seq must be a non-negative integer, not {self.audit_seq!r}")

    def _check_event_fields(self) -> None:
        if self.status is not None and not (isinstance(self.status, str) and _STATUS.fullmatch(self.status)):
            raise EvidenceError(f"status {self.status!r} is not an RFC 3463 status code such as 5.1.1")
        if self.read_mode not in (None, *READ_MODES):
            raise EvidenceError(f"read_mode must be one of {READ_MODES} or None, not {self.read_mode!r}")
        if self.event in _NEEDS_RECIPIENT and self.recipient is None:
            raise EvidenceError(f"{self.event} evidence must name the recipient")
        if self.event == "ContentAccessTracking" and self.read_mode is None:
            raise EvidenceError("ContentAccessTracking evidence must give read_mode (consent or mdn)")
        if self.event == "HandlingStarted" and not self.handler:
            raise EvidenceError("HandlingStarted evidence must name the handler (contact point)")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise EvidenceError(f"{name} must be text, not {type(value).__name__}")
    return value


def _check_uuid(name: str, value: object) -> None:
    try:
        ok = isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        ok = False
    if not ok:
        raise EvidenceError(f"{name} {value!r} is not a UUID in canonical lower-case form")


def _utc(value: object) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise EvidenceError("time must be an aware datetime")
    return value.astimezone(dt.timezone.utc)


# --- XML -------------------------------------------------------------------

# Field name -> element name, in document order.
_ELEMENTS = {
    "evidence_id": "EvidenceIdentifier", "event": "Event", "time": "EventTime",
    "issuer": "Issuer", "issuer_name": "IssuerName", "sender": "SenderDetails",
    "recipient": "RecipientDetails", "message_uuid": "MessageUUID", "message_id": "MessageID",
    "sha256": "MessageSHA256", "delivered_sha256": "DeliveredSHA256",
    "audit_chain": "AuditChain", "audit_seq": "AuditSeq", "audit_hash": "AuditHash",
    "status": "Status", "reason": "Reason", "handler": "Handler",
    "handler_person": "HandlerPerson", "read_mode": "ReadMode", "subject": "Subject",
    "signature": "SignatureResult",
}
_PARTY_ELEMENTS = {"address": "Address", "name": "Name", "party": "Party"}
_OPTIONAL = {f.name for f in fields(Evidence) if f.default is None} | {"recipient", "delivered_sha256"}


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def to_xml(ev: Evidence) -> bytes:
    """`ev` as a UTF-8 `evidence.xml` document.

    Written directly, byte for byte what ElementTree writes for this tree after
    `ET.indent` (`tostring(encoding="utf-8", xml_declaration=True)`), at a fraction of its
    cost: a receipt is built for every acceptance and every delivery.  The default
    namespace is a plain attribute, so `version` stays unqualified."""
    out = [f"<?xml version='1.0' encoding='utf-8'?>\n<Evidence xmlns=\"{NS}\" version=\"{VERSION}\">"]
    for name, tag in _ELEMENTS.items():
        value = getattr(ev, name)
        if value is None:
            continue
        if isinstance(value, PartyRef):
            out.append(f"\n  <{tag}>")
            for pname, ptag in _PARTY_ELEMENTS.items():
                pvalue = getattr(value, pname)
                if pvalue is not None:
                    out.append("\n    " + _leaf_xml(ptag, pvalue))
            out.append(f"\n  </{tag}>")
        elif isinstance(value, dt.datetime):
            out.append("\n  " + _leaf_xml(tag, value.strftime(_TIME_FORMAT)))
        else:
            out.append("\n  " + _leaf_xml(tag, str(value)))
    out.append("\n</Evidence>\n")
    # As ElementTree's writer: what UTF-8 cannot carry (a lone surrogate) as a character reference.
    return "".join(out).encode("utf-8", "xmlcharrefreplace")


def _leaf_xml(tag: str, text: str) -> str:
    """An element with only text, escaped as ElementTree escapes character data."""
    if not text:
        return f"<{tag} />"
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return f"<{tag}>{text}</{tag}>"


def from_xml(data: bytes) -> Evidence:
    """Read an `evidence.xml` document.  Raises EvidenceError on anything not
    exactly the shape `to_xml` writes (besides white space between elements)."""
    root = _parse(data)
    if root.tag != _q("Evidence"):
        raise EvidenceError(f"root element is {root.tag!r}, not Evidence in namespace {NS}")
    if root.get("version") != VERSION:
        raise EvidenceError(f"evidence version {root.get('version')!r} is not supported (only {VERSION})")
    children = _children(root, _ELEMENTS, "Evidence")
    values: dict[str, object] = {}
    for name, tag in _ELEMENTS.items():
        element = children.get(tag)
        if element is None:
            if name not in _OPTIONAL:
                raise EvidenceError(f"evidence has no {tag} element")
            values[name] = None
        elif name in ("sender", "recipient"):
            values[name] = _party_from_xml(element, tag)
        else:
            values[name] = _leaf(element, tag)
    values["time"] = _read_time(values["time"])
    values["audit_seq"] = _read_int(values["audit_seq"], "AuditSeq")
    try:
        return Evidence(**values)
    except EvidenceError as exc:
        raise EvidenceError(f"evidence.xml: {exc}") from None


def _parse(data: bytes) -> ET.Element:
    if not isinstance(data, bytes) or len(data) > MAX_XML:
        raise EvidenceError(f"evidence document must be bytes of at most {MAX_XML} bytes")
    # The parser is told the encoding is UTF-8, so a DTD can only appear as these
    # ASCII bytes; refusing them rules out entity expansion of every kind.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise EvidenceError("evidence document must not contain a DTD (<!DOCTYPE or <!ENTITY)")
    parser = ET.XMLParser(encoding="utf-8")
    try:
        parser.feed(data)
        return parser.close()
    except ET.ParseError as exc:
        raise EvidenceError(f"evidence document is not well-formed XML: {exc}") from None


def _children(parent: ET.Element, known: dict[str, str], where: str) -> dict[str, ET.Element]:
    allowed = {_q(tag): tag for tag in known.values()}
    found: dict[str, ET.Element] = {}
    for child in parent:
        tag = allowed.get(child.tag) if isinstance(child.tag, str) else None
        if tag is None:
            raise EvidenceError(f"unexpected element {child.tag!r} in {where}")
        if tag in found:
            raise EvidenceError(f"element {tag} appears twice in {where}")
        found[tag] = child
    if (parent.text or "").strip():
        raise EvidenceError(f"{where} has text outside its elements")
    return found


def _leaf(element: ET.Element, tag: str) -> str:
    if len(element) or element.attrib:
        raise EvidenceError(f"{tag} must hold only text")
    return element.text or ""


def _party_from_xml(element: ET.Element, tag: str) -> PartyRef:
    children = _children(element, _PARTY_ELEMENTS, tag)
    for required in ("Address", "Name"):
        if required not in children:
            raise EvidenceError(f"{tag} has no {required} element")
    party = children.get("Party")
    try:
        return PartyRef(address=_leaf(children["Address"], "Address"), name=_leaf(children["Name"], "Name"),
                        party=None if party is None else _leaf(party, "Party"))
    except EvidenceError as exc:
        raise EvidenceError(f"{tag}: {exc}") from None


def _read_time(text: object) -> dt.datetime:
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise EvidenceError(f"EventTime {text!r} is not of the form YYYY-MM-DDThh:mm:ss.ffffffZ")
    try:
        return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise EvidenceError(f"EventTime {text!r} is not a valid time") from None


def _read_int(text: object, tag: str) -> int:
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,18}", text):
        raise EvidenceError(f"{tag} {text!r} is not a non-negative integer")
    return int(text)

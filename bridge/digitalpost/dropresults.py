"""The drop folder's result files: NAME.receipt.xml and NAME.error.xml (namespace `NS`).

    <receipt xmlns="urn:dp2bridge:dropfolder:1">       <error xmlns="urn:dp2bridge:dropfolder:1">
      <file/> <sha256/> <tenant/>                        <file/> <sha256/> <tenant/>
      <status>accepted|duplicate</status>                <status>refused</status>
      <time/> <session/>                                 <time/> <session/>
      <messageUUID/>                                     <summary xml:lang="en|da"/> <reason/>
                                                         <code/>? (RFC 3463, as SMTP would say)
                                                         <problem><path/><line/>? <message
                                                           xml:lang="en|da"/></problem>*

`file` is the name the bridge gave the file in processing/; `sha256` the digest of what was read
(for a file over the size limit: of its first limit + 1 bytes, all that is read of it).  Text an
XML document cannot hold (control characters, undecodable bytes of a file name) is U+FFFD.

`result_base` picks the name a processed file and its result get: the first free NAME, NAME-1,
...; or the one whose result already records the same sha256 (a crash came between writing the
result and moving the original).

Imports only the standard library and `xml.MemoInvalid`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bridge.digitalpost.xml import MemoInvalid
from bridge.errors import BridgeError

NS = "urn:dp2bridge:dropfolder:1"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
REFUSED = ("The MeMo file was not accepted.", "MeMo-filen blev ikke modtaget.")


def receipt_xml(fields: dict[str, str], now: dt.datetime, status: str, uuid: str) -> bytes:
    """A receipt: `fields` has file, sha256, tenant and session."""
    root = _document("receipt", fields, now, status)
    _sub(root, "messageUUID", uuid)
    return _serialize(root)


def error_xml(fields: dict[str, str], now: dt.datetime, reason: str,
              exc: BridgeError | None = None) -> bytes:
    """An error file; `reason` is client-safe text, `exc` adds its code and MeMo problems."""
    root = _document("error", fields, now, "refused")
    for lang, text in zip(("en", "da"), REFUSED):
        _sub(root, "summary", text, {XML_LANG: lang})
    _sub(root, "reason", reason)
    if exc is not None:
        _sub(root, "code", exc.enhanced)                # RFC 3463, as SMTP would say
    for problem in exc.errors if isinstance(exc, MemoInvalid) else ():
        el = _sub(root, "problem", None)
        _sub(el, "path", problem.path)
        if problem.line is not None:
            _sub(el, "line", str(problem.line))
        _sub(el, "message", problem.message, {XML_LANG: "en"})
        _sub(el, "message", problem.message_da, {XML_LANG: "da"})
    return _serialize(root)


def result_name(kind: str, base: str) -> str:
    return f"{base}.{kind}.xml"


def result_base(processed: Path, name: str, digest: str) -> tuple[str, str]:
    """(base name in processed/, "" or the kind of a result already written for this file).

    A base is free when neither BASE.xml nor a result exists.  A result without its BASE.xml
    whose sha256 is `digest` was written for this very file before a crash."""
    stem, n = xml_stem(name), 0
    while True:
        base = f"{stem}-{n}" if n else stem
        n += 1
        if os.path.lexists(processed / f"{base}.xml"):
            continue
        results = [k for k in ("receipt", "error") if os.path.lexists(processed / result_name(k, base))]
        if not results:
            return base, ""
        if digest and recorded_digest(processed / result_name(results[0], base)) == digest:
            return base, results[0]


def xml_stem(name: str) -> str:
    """NAME of NAME.xml."""
    return name[:-len(".xml")] if name.endswith(".xml") else name


def recorded_digest(path: Path) -> str:
    """The sha256 a result file records, or "" when it cannot be read."""
    try:
        return ET.parse(path).getroot().findtext(f"{{{NS}}}sha256") or ""
    except (OSError, ET.ParseError):
        return ""


def xml_safe(text: str) -> str:
    """`text` with what XML 1.0 cannot hold (controls, undecodable bytes of a file name) as U+FFFD."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return NOT_XML.sub("\ufffd", text)


def _document(kind: str, fields: dict[str, str], now: dt.datetime, status: str) -> ET.Element:
    root = ET.Element(f"{{{NS}}}{kind}")
    for key in ("file", "sha256", "tenant"):
        _sub(root, key, fields[key])
    _sub(root, "status", status)
    _sub(root, "time", now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _sub(root, "session", fields["session"])
    return root


def _sub(parent: ET.Element, tag: str, text: str | None, attrs: dict[str, str] | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NS}}}{tag}", attrs or {})
    el.text = None if text is None else xml_safe(text)
    return el


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=NS) + b"\n"

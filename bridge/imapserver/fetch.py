"""FETCH and UID FETCH (RFC 9051 section 6.4.5), answered from what delivery stored.

ENVELOPE and BODYSTRUCTURE come from the stored analysis (core/mimeinfo.py),
never from re-parsing; BODY[section]<partial> slices the blob at the stored
offsets, byte-exact.  A non-PEEK body fetch sets \\Seen (read-write mailboxes)
and reports the new FLAGS.  Responses are built in a worker thread in chunks
and written with back-pressure, so a FETCH 1:* of a large mailbox streams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.core.mimeinfo import find_part
from bridge.core.render import field_name, split_header
from bridge.imapserver import qresync
from bridge.imapserver.errors import No
from bridge.imapserver.parser import Atom, ParseError, Reader
from bridge.imapserver.registry import SEL, command
from bridge.imapserver.responses import body_structure, envelope, flag_list, literal
from bridge.imapserver.sequences import uids_for
from bridge.store.mailboxes import EntryData

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession

CHUNK = 200                  # messages per store query
BATCH_BYTES = 2 * 1024 * 1024  # message bytes rendered and queued before waiting for the client
MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
          "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
          "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}
SIMPLE = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
          "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ"}
_SECTION = re.compile(r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?$",
                      re.IGNORECASE)
_SECTION_TEXT = re.compile(r"^((?:[1-9]\d*)(?:\.[1-9]\d*)*)?(?:\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?"
                           r"(?: \((.*)\))?$", re.IGNORECASE)


_KNOWN_CTE = frozenset({"7BIT", "8BIT", "BINARY", "BASE64", "QUOTED-PRINTABLE"})


@dataclass(frozen=True)
class Item:
    name: str                      # FLAGS, BODY[], BINARY.SIZE[] ...
    kind: str                      # simple | body | binary | binary.size
    peek: bool = True
    part: tuple[int, ...] = ()
    spec: str = ""                 # "", HEADER, TEXT, MIME, HEADER.FIELDS, HEADER.FIELDS.NOT
    fields: tuple[str, ...] = ()
    partial: tuple[int, int | None] | None = None

    @property
    def sets_seen(self) -> bool:
        return not self.peek


def parse_items(args: Reader) -> list[Item]:
    listed = args.has_list()
    tokens = args.list_tokens("fetch items") if listed else [args.next("fetch items")]
    if not tokens:
        raise ParseError("empty list of fetch items")
    items: list[Item] = []
    for tok in tokens:
        if not isinstance(tok, Atom):
            raise ParseError("fetch items must be atoms")
        word = tok.value.upper()
        if word in MACROS and not listed:       # RFC 9051: a macro stands alone, unparenthesized
            items += [Item(n, "simple") for n in MACROS[word]]
        elif word in SIMPLE:
            items.append(Item(word, "simple", peek=word not in ("RFC822", "RFC822.TEXT")))
        else:
            items.append(_section_item(tok.value))
    return items


def _section_item(text: str) -> Item:
    match = _SECTION.match(text)
    if not match:
        raise ParseError(f"unknown fetch item {text[:40]!r}")
    head, section, offset, length = match.groups()
    head = head.upper()
    sec = _SECTION_TEXT.match(section.strip())
    if not sec:
        raise ParseError("bad section")
    part = tuple(int(x) for x in sec.group(1).split(".")) if sec.group(1) else ()
    spec = (sec.group(2) or "").upper()
    fields = tuple(f.upper() for f in (sec.group(3) or "").replace('"', "").split())
    if spec.startswith("HEADER.FIELDS") and not fields:
        raise ParseError("HEADER.FIELDS needs a list of field names")
    kind = "binary.size" if head == "BINARY.SIZE" else "binary" if head.startswith("BINARY") else "body"
    if kind != "body" and spec:
        raise ParseError("BINARY takes a part number only")
    partial = (int(offset), int(length) if length is not None else None) if offset is not None else None
    name = ("BODY" if kind == "body" else "BINARY" if kind == "binary" else "BINARY.SIZE") + f"[{section}]"
    return Item(name, kind, peek=".PEEK" in head or kind == "binary.size", part=part, spec=spec,
                fields=fields, partial=partial)


@command("FETCH", SEL, uid=True)
async def fetch(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    sel = s.selected
    assert sel is not None
    uid_set = args.atom("sequence set")
    uids = uids_for(sel, uid_set, uid)
    items = parse_items(args)
    changedsince, vanished = _modifiers(args, s, uid)
    if changedsince is not None or any(i.name == "MODSEQ" for i in items):
        s.enabled.add("CONDSTORE")
    if uid and not any(i.name == "UID" for i in items):
        items.insert(0, Item("UID", "simple"))
    if changedsince is not None and not any(i.name == "MODSEQ" for i in items):
        items.append(Item("MODSEQ", "simple"))    # RFC 7162 section 3.1.4.1: CHANGEDSINCE implies it
    if vanished:
        await qresync.send_vanished(s, sel, uid_set, changedsince or 0)
    newly_seen: set[int] = set()
    if any(i.sets_seen for i in items) and not sel.read_only:
        newly_seen = await _mark_seen(s, uids)
    with_flags = [Item("FLAGS", "simple")] + items if not any(i.name == "FLAGS" for i in items) else items
    for start in range(0, len(uids), CHUNK):
        part = uids[start:start + CHUNK]
        data = await s.blocking(s.ctx.mailboxes.entries, sel.mailbox.id, part)
        if changedsince is not None:
            data = [d for d in data if d.modseq > changedsince]
        if with_flags is items or newly_seen:     # the client sees these entries' current flags
            for d in data:
                if with_flags is items or d.uid in newly_seen:
                    sel.tell(d.uid, d.modseq)
        for batch in _batches(data, items):
            lines = await s.blocking(_render, s.ctx.blobs, batch, items, with_flags, newly_seen)
            s.conn.write_lines([b"* %d FETCH (%b)" % (seq, line) for d, line in zip(batch, lines)
                                if (seq := sel.seq_of(d.uid)) is not None])
            del lines
            await s.conn.drain()          # back-pressure: a client that does not read stalls here
    if uid:
        await s.sync(expunges=True)


def _modifiers(args: Reader, s: "ImapSession", uid: bool) -> tuple[int | None, bool]:
    """(CHANGEDSINCE n [VANISHED]) of RFC 7162: (n or None, VANISHED given)."""
    if args.at_end():
        return None, False
    tokens = args.list_tokens("fetch modifiers")
    args.end()
    return qresync.fetch_modifiers(tokens, s, uid)


async def _mark_seen(s: "ImapSession", uids: list[int]) -> set[int]:
    """Set \\Seen on `uids`; the UIDs whose flags changed (their FETCH responses carry FLAGS,
    RFC 9051 section 6.4.5)."""
    sel = s.selected
    if not uids or sel is None:
        return set()
    # A read first: messages that are already \Seen (most, once read) need no write transaction.
    states = await s.blocking(s.ctx.mailboxes.flag_states, sel.mailbox.id, uids)
    unseen = [e.uid for e in states if "\\Seen" not in e.flags]
    if not unseen:
        return set()
    changed, _ = await s.blocking(s.ctx.mailboxes.store_flags, sel.mailbox.id, unseen, "+", ["\\Seen"], None,
                                  s.account_id())
    if changed:
        s.notify_changed()
    return {e.uid for e in changed}


def _needs_blob(items: list[Item]) -> bool:
    return any(i.kind != "simple" or i.name.startswith("RFC822") and i.name != "RFC822.SIZE" for i in items)


def _batches(data: list[EntryData], items: list[Item]) -> list[list[EntryData]]:
    """`data` split so that one batch holds at most BATCH_BYTES of message bodies (at least one
    message): the memory a FETCH holds at a time does not grow with message size."""
    if not _needs_blob(items):
        return [data] if data else []
    out: list[list[EntryData]] = []
    batch: list[EntryData] = []
    total = 0
    for d in data:
        if batch and total + d.size > BATCH_BYTES:
            out.append(batch)
            batch, total = [], 0
        batch.append(d)
        total += d.size
    if batch:
        out.append(batch)
    return out


def _render(blobs: Any, data: list[EntryData], items: list[Item], with_flags: list[Item],
            newly_seen: set[int]) -> list[bytes]:
    """Blocking: the parenthesised contents of each message's FETCH response."""
    out = []
    needs_blob = _needs_blob(items)
    for d in data:
        raw = blobs.get(d.sha256) if needs_blob else b""
        these = with_flags if d.uid in newly_seen else items
        out.append(b" ".join(_item(i, d, raw) for i in these))
    return out


def _item(item: Item, d: EntryData, raw: bytes) -> bytes:
    name = item.name
    if item.kind == "simple":
        return name.encode() + b" " + _simple(name, d, raw)
    if item.kind == "binary.size":
        return name.encode() + b" %d" % len(_binary(d, raw, item.part))
    data = _binary(d, raw, item.part) if item.kind == "binary" else _section(d, raw, item)
    key = name.replace(".PEEK", "")
    if item.partial is not None:
        offset, length = item.partial
        data = data[offset:offset + length if length is not None else None]
        key += f"<{offset}>"
    if item.kind == "binary" and b"\x00" in data:
        return key.encode() + b" ~" + literal(data)      # RFC 9051 literal8: NUL octets inside
    return key.encode() + b" " + literal(data)


def _simple(name: str, d: EntryData, raw: bytes) -> bytes:
    if name == "FLAGS":
        return flag_list(d.flags)
    if name == "UID":
        return b"%d" % d.uid
    if name == "INTERNALDATE":
        return b'"' + d.internal_date.strftime("%d-%b-%Y %H:%M:%S +0000").encode() + b'"'
    if name == "RFC822.SIZE":
        return b"%d" % d.size
    if name == "ENVELOPE":
        return envelope(d.envelope)
    if name in ("BODYSTRUCTURE", "BODY"):
        return body_structure(d.body, extended=name == "BODYSTRUCTURE")
    if name == "MODSEQ":
        return b"(%d)" % d.modseq
    if name == "RFC822.HEADER":
        return literal(raw[:d.header_size])
    if name == "RFC822.TEXT":
        return literal(raw[d.header_size:])
    return literal(raw)                                   # RFC822


def _section(d: EntryData, raw: bytes, item: Item) -> bytes:
    if not item.part:
        header, text = raw[:d.header_size], raw[d.header_size:]
        return _spec(item, header, text)
    node = find_part(d.body, list(item.part))
    if node is None:
        return b""
    h0, b0, end = node["offsets"]
    if "message" in node and item.spec in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        inner = node["message"]["body"]["offsets"][1]
        return _spec(item, raw[b0:inner], raw[inner:end])
    if item.spec == "MIME":
        return raw[h0:b0]
    if item.spec:
        return b""
    return raw[b0:end]


def _spec(item: Item, header: bytes, text: bytes) -> bytes:
    if item.spec == "":
        return header + text
    if item.spec == "HEADER":
        return header
    if item.spec == "TEXT":
        return text
    fields, _ = split_header(header)
    wanted = {f.lower().encode() for f in item.fields}
    keep = [f for f in fields if (field_name(f) in wanted) != (item.spec == "HEADER.FIELDS.NOT")
            and field_name(f)]
    return b"".join(keep) + b"\r\n"


def _binary(d: EntryData, raw: bytes, part: tuple[int, ...]) -> bytes:
    """RFC 3516: the part's content with its transfer encoding undone."""
    import base64
    import binascii
    import quopri
    node = find_part(d.body, list(part)) if part else d.body
    if node is None or node["type"] == "multipart":
        return b""
    _, b0, end = node["offsets"]
    data = raw[b0:end]
    enc = (node.get("encoding") or "7BIT").upper()
    if enc not in _KNOWN_CTE:
        raise No("cannot decode this content transfer encoding", "UNKNOWN-CTE")     # RFC 3516 section 4.3
    try:
        if enc == "BASE64":
            return base64.b64decode(data, validate=False)
        if enc == "QUOTED-PRINTABLE":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return data
    return data

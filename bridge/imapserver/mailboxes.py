"""Mailbox commands: NAMESPACE, LIST, LSUB, STATUS, SELECT, EXAMINE, CLOSE, UNSELECT.

Names resolve only among the mailboxes the account may see (its own and the
shared mailboxes of granted contact points, under the NAMESPACE shared prefix
"Shared/"); anything else is `NO [NONEXISTENT]`, the same answer whether the
name exists for someone else or not at all (DESIGN.md section 6).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bridge.imapserver.errors import No
from bridge.imapserver.parser import Reader
from bridge.imapserver.registry import AUTH, SEL, command
from bridge.imapserver.responses import mailbox_name
from bridge.store.mailboxes import SHARED_PREFIX, MailboxView

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession

DELIMITER = "/"
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                "HIGHESTMODSEQ")


def nonexistent() -> No:
    return No("no such mailbox", "NONEXISTENT")


async def resolve(s: "ImapSession", name: str) -> MailboxView:
    box = await s.blocking(s.ctx.mailboxes.find, s.account_id(), name)
    if box is None:
        raise nonexistent()
    return box


@command("NAMESPACE", AUTH)
async def namespace(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    s.untagged(b'NAMESPACE (("" "/")) NIL (("' + SHARED_PREFIX.encode() + b'/" "/"))')


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 9051 section 6.3.9: "*" matches anything, "%" anything but the delimiter."""
    full = reference + pattern
    regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in full)
    return re.compile(f"^{regex}$", re.IGNORECASE if full.upper().startswith("INBOX") else 0)


def _attributes(box: MailboxView, names: set[str]) -> list[str]:
    attrs = ["\\HasChildren" if any(n.startswith(box.name + DELIMITER) for n in names) else "\\HasNoChildren"]
    if box.special_use:
        attrs.append(box.special_use)
    if box.subscribed:
        attrs.append("\\Subscribed")
    return attrs


@command("LIST", AUTH)
async def list_(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    reference, pattern = args.text("reference"), args.text("mailbox pattern")
    args.end()
    if pattern == "":
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return
    boxes = await s.blocking(s.ctx.mailboxes.mailboxes, s.account_id())
    names = {b.name for b in boxes}
    regex = _pattern(reference, pattern)
    for box in boxes:
        if regex.match(box.name) or (box.name == "INBOX" and regex.match("inbox")):
            attrs = " ".join(_attributes(box, names)).encode()
            s.untagged(b"LIST (" + attrs + b') "/" ' + mailbox_name(box.name))


@command("LSUB", AUTH)
async def lsub(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    reference, pattern = args.text("reference"), args.text("mailbox pattern")
    args.end()
    boxes = await s.blocking(s.ctx.mailboxes.mailboxes, s.account_id())
    regex = _pattern(reference, pattern)
    for box in boxes:
        if box.subscribed and regex.match(box.name):
            s.untagged(b'LSUB () "/" ' + mailbox_name(box.name))


@command("STATUS", AUTH)
async def status(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    name = args.text("mailbox")
    items = [i.upper() for i in args.atoms_list("status items")]
    args.end()
    unknown = [i for i in items if i not in STATUS_ITEMS]
    if unknown or not items:
        from bridge.imapserver.errors import Bad
        raise Bad(f"unknown STATUS item {unknown[0] if unknown else ''}".strip())
    box = await resolve(s, name)
    view, entries = await s.blocking(s.ctx.mailboxes.state, box.id)
    values = {"MESSAGES": len(entries), "UIDNEXT": view.uidnext, "UIDVALIDITY": view.uidvalidity,
              "UNSEEN": sum(1 for e in entries if "\\Seen" not in e.flags),
              "DELETED": sum(1 for e in entries if "\\Deleted" in e.flags), "RECENT": 0,
              "HIGHESTMODSEQ": view.highestmodseq}
    if "SIZE" in items:
        values["SIZE"] = sum(e.size for e in await s.blocking(
            s.ctx.mailboxes.entries, box.id, [e.uid for e in entries]))
    body = " ".join(f"{i} {values[i]}" for i in items).encode()
    s.untagged(b"STATUS " + mailbox_name(box.name) + b" (" + body + b")")


async def _select(s: "ImapSession", args: Reader, read_only: bool) -> str:
    name = args.text("mailbox")
    params = [p.upper() for p in args.atoms_list("select parameters")] if args.has_list() else []
    args.end()
    if "CONDSTORE" in params:
        s.enabled.add("CONDSTORE")
    s.unselect()
    box = await resolve(s, name)
    sel = await s.select_mailbox(box, read_only)
    from bridge.imapserver.responses import flag_list
    keywords = sorted({f for flags in sel.flags.values() for f in flags if not f.startswith("\\")})
    system = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
    s.untagged(b"%d EXISTS" % len(sel.uids))
    s.untagged(b"0 RECENT")
    s.untagged(b"FLAGS " + flag_list(system + keywords))
    s.untagged(b"OK [PERMANENTFLAGS " + flag_list(system + keywords + ["\\*"]) + b"] flags permitted")
    s.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % sel.mailbox.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] predicted next UID" % sel.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] highest" % sel.highestmodseq)
    return "[READ-ONLY] EXAMINE completed" if read_only else "[READ-WRITE] SELECT completed"


@command("SELECT", AUTH)
async def select_(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    return await _select(s, args, read_only=False)


@command("EXAMINE", AUTH)
async def examine(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    return await _select(s, args, read_only=True)


@command("UNSELECT", SEL)
async def unselect(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    s.unselect()


@command("CLOSE", SEL)
async def close(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    # todo: expunge \Deleted messages silently when read-write (RFC 9051 section 6.4.1)
    s.unselect()


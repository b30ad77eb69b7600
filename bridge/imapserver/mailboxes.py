"""Mailbox commands: NAMESPACE, LIST (RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE, RFC 5819
LIST-STATUS, RFC 3348 CHILDREN), LSUB, STATUS, SELECT, EXAMINE, CLOSE, UNSELECT, CREATE,
DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE.

Names resolve only among the mailboxes the account may see (its own and the
shared mailboxes of granted contact points, under the NAMESPACE shared prefix
"Shared/"); anything else is `NO [NONEXISTENT] no such mailbox`, the same answer
whether the name exists for someone else, does not exist, or is not a valid
name at all (DESIGN.md section 6; names: bridge/core/mailboxnames.py).  Access
to a selected shared mailbox is checked again before every command
(`recheck_selected`): once the grant is revoked the session is told
`* OK [CLOSED]`, falls back to the authenticated state, and a command that needs
a selected mailbox is answered NONEXISTENT.  Talks to the store only through
MailboxRepository (bridge/store/mailboxes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from bridge.core import mailboxnames as names
from bridge.imapserver.errors import Bad, No
from bridge.imapserver.parser import CLOSE, OPEN, Atom, Reader
from bridge.imapserver.registry import AUTH, AUTHENTICATED, SEL, command
from bridge.store.mailboxes import SHARED_PREFIX, MailboxView, Refused

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession

DELIMITER = names.DELIMITER
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                "HIGHESTMODSEQ")
SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def nonexistent() -> No:
    return No("no such mailbox", "NONEXISTENT")


async def resolve(s: "ImapSession", name: str) -> MailboxView:
    """The mailbox this account calls `name`, or the NONEXISTENT answer (SELECT, STATUS...)."""
    box = await s.blocking(s.ctx.mailboxes.find, s.account_id(), name)
    if box is None:
        raise nonexistent()
    return box


async def recheck_selected(s: "ImapSession", states: frozenset[str]) -> None:
    """Before every command: is the selected shared mailbox still granted, and the selected
    mailbox still there?  If not, close it (`* OK [CLOSED]`); a command that needs a
    selected mailbox then gets NONEXISTENT, others (NOOP, LOGOUT, LIST, SELECT...) run in
    the authenticated state.  An own mailbox goes away only by DELETE, which announces
    itself on the mailbox's event queue, so it is looked up only after an event."""
    sel = s.selected
    if sel is None or (not sel.mailbox.shared and (sel.queue is None or sel.queue.empty())):
        return
    if await s.blocking(s.ctx.mailboxes.can_access, s.account_id(), sel.mailbox.id):
        return
    s.unselect()
    s.untagged(b"OK [CLOSED] mailbox closed")
    if AUTHENTICATED not in states:
        raise nonexistent()


@command("NAMESPACE", AUTH)
async def namespace(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    s.untagged(b'NAMESPACE (("" "/")) NIL (("' + SHARED_PREFIX.encode() + b'/" "/"))')


# --- LIST and LSUB ------------------------------------------------------------------


@dataclass
class ListRequest:
    """A parsed LIST command (RFC 5258 section 3)."""

    reference: str
    patterns: list[str]
    selection: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    status_items: list[str] = field(default_factory=list)


def _parse_list(args: Reader) -> ListRequest:
    selection = {o.upper() for o in args.atoms_list("selection options")} if args.has_list() else set()
    reference = args.text("reference")
    if args.has_list():
        patterns = [_pattern_text(t) for t in args.list_tokens("mailbox patterns")]
        if not patterns:
            raise Bad("empty list of mailbox patterns")
    else:
        patterns = [args.text("mailbox pattern")]
    req = ListRequest(reference, patterns, selection)
    if not args.at_end():
        if args.atom("RETURN").upper() != "RETURN":
            raise Bad("expected RETURN")
        _parse_returns(req, args.list_tokens("return options"))
    args.end()
    if selection - SELECTION_OPTIONS:
        raise Bad("unknown LIST selection option")
    # RFC 5258 section 3.1: RECURSIVEMATCH alone (or with REMOTE only) is a syntax error.
    if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
        raise Bad("RECURSIVEMATCH needs another selection option")
    return req


def _pattern_text(token: object) -> str:
    if isinstance(token, Atom):
        return token.value
    if isinstance(token, bytes):
        try:
            return token.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad("mailbox pattern is not valid UTF-8") from None
    raise Bad("expected a mailbox pattern")


def _parse_returns(req: ListRequest, tokens: list[object]) -> None:
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not isinstance(tok, Atom) or tok.upper() not in RETURN_OPTIONS:
            raise Bad("unknown LIST return option")
        req.returns.add(tok.upper())
        i += 1
        if tok.upper() == "STATUS":                      # RFC 5819: STATUS (items)
            if i >= len(tokens) or tokens[i] is not OPEN:
                raise Bad("STATUS needs a list of items")
            end = tokens.index(CLOSE, i)
            req.status_items = _status_items(tokens[i + 1:end])
            i = end + 1


def _status_items(tokens: list[object]) -> list[str]:
    items = [t.upper() for t in tokens if isinstance(t, Atom)]
    if len(items) != len(tokens) or not items:
        raise Bad("STATUS needs a list of items")
    unknown = [i for i in items if i not in STATUS_ITEMS]
    if unknown:
        raise Bad(f"unknown STATUS item {unknown[0][:40]}")
    return items


def _matcher(reference: str, patterns: list[str]) -> Callable[[str], bool]:
    """RFC 9051 section 6.3.9: "*" matches anything, "%" anything but the delimiter; the
    reference is prefixed; a leading INBOX is case-insensitive."""
    full = []
    for pattern in patterns:
        text = reference + pattern
        if text[:5].upper() == "INBOX" and text[5:6] in ("", DELIMITER, "*", "%"):
            text = "INBOX" + text[5:]
        full.append(text)
    return lambda name: any(names.glob_match(p, name) for p in full)


class Tree:
    """The names an account sees: its mailboxes and the superior names they imply
    ("Shared", "Shared/jobcenter"), which exist only as \\Noselect parents."""

    def __init__(self, boxes: list[MailboxView]) -> None:
        self.boxes: dict[str, MailboxView | None] = {b.name: b for b in boxes}
        self.parents: set[str] = set()
        for b in boxes:
            for parent in names.parents(b.name):
                self.parents.add(parent)
                self.boxes.setdefault(parent, None)

    def ordered(self) -> list[str]:
        """INBOX first, then own names, then the shared namespace; parents before inferiors."""
        return sorted(self.boxes, key=lambda n: (names.in_shared_namespace(n),
                                                 n.split(DELIMITER)[0] != "INBOX", n.split(DELIMITER)))

    def descendants(self, name: str) -> list[str]:
        return [n for n in self.boxes if names.is_inferior(n, name)] if name in self.parents else []

    def attributes(self, name: str) -> list[str]:
        box = self.boxes[name]
        if box is None:
            return ["\\Noselect", "\\HasChildren"]
        attrs = ["\\HasChildren" if name in self.parents else "\\HasNoChildren"]
        if box.special_use:
            attrs.append(box.special_use)
        if box.subscribed:
            attrs.append("\\Subscribed")
        return attrs


def _selected_by(req: ListRequest) -> Callable[[MailboxView | None], bool] | None:
    """The selection criteria of the SUBSCRIBED / SPECIAL-USE options, or None (all names)."""
    sub, special = "SUBSCRIBED" in req.selection, "SPECIAL-USE" in req.selection
    if not (sub or special):
        return None
    return lambda box: box is not None and (not sub or box.subscribed) and (not special or
                                                                           bool(box.special_use))


def list_lines(tree: Tree, req: ListRequest, wire: Callable[[str], bytes]) -> list[tuple[str, bytes]]:
    """(name, LIST response) for each name the request selects, in tree order."""
    matches = _matcher(req.reference, req.patterns)
    criteria = _selected_by(req)
    childinfo = "RECURSIVEMATCH" in req.selection and "SUBSCRIBED" in req.selection
    out = []
    for name in tree.ordered():
        if not matches(name):
            continue
        extra = b""
        if criteria is not None:
            chosen = criteria(tree.boxes[name])
            hits = [d for d in tree.descendants(name) if criteria(tree.boxes[d])] if childinfo else []
            # RFC 5258 section 3.5: a name that is not selected itself is returned only for
            # selected descendants the pattern does not return.
            if not chosen and not any(not matches(d) for d in hits):
                continue
            if hits:
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
        attrs = " ".join(tree.attributes(name)).encode()
        out.append((name, b"LIST (" + attrs + b') "/" ' + wire(name) + extra))
    return out


@command("LIST", AUTH)
async def list_(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    req = _parse_list(args)
    req.reference, req.patterns = s.name_in(req.reference), [s.name_in(p) for p in req.patterns]
    if req.patterns == [""] and not req.selection:
        # RFC 9051 section 6.3.9: the delimiter and the root of the reference's hierarchy.
        root = req.reference.split(DELIMITER, 1)[0] + DELIMITER if DELIMITER in req.reference else ""
        s.untagged(b'LIST (\\Noselect) "/" ' + s.name_out(root))
        return
    tree = Tree(await s.blocking(s.ctx.mailboxes.mailboxes, s.account_id()))
    for name, line in list_lines(tree, req, s.name_out):
        s.untagged(line)
        box = tree.boxes[name]
        if req.status_items and box is not None:       # RFC 5819: right after its LIST line
            try:
                s.untagged(await _status_line(s, box, req.status_items))
            except No:
                pass                                   # deleted meanwhile: no STATUS for it


@command("LSUB", AUTH)
async def lsub(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    reference, pattern = s.name_in(args.text("reference")), s.name_in(args.text("mailbox pattern"))
    args.end()
    tree = Tree(await s.blocking(s.ctx.mailboxes.mailboxes, s.account_id()))
    matches = _matcher(reference, [pattern])
    for name in tree.ordered():
        box = tree.boxes[name]
        if not matches(name):
            continue
        if box is not None and box.subscribed:
            s.untagged(b'LSUB () "/" ' + s.name_out(name))
        elif any(not matches(d) and (inferior := tree.boxes[d]) is not None and inferior.subscribed
                 for d in tree.descendants(name)):
            # RFC 3501 section 6.3.9: a "%" that hides subscribed inferiors shows their parent.
            s.untagged(b'LSUB (\\Noselect) "/" ' + s.name_out(name))


# --- STATUS ---------------------------------------------------------------------------


@command("STATUS", AUTH)
async def status(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    name = s.name_in(args.text("mailbox"))
    if not args.has_list():
        raise Bad("expected (status items)")
    items = _status_items(args.list_tokens("status items"))
    args.end()
    box = await resolve(s, name)
    s.untagged(await _status_line(s, box, items))


async def _status_line(s: "ImapSession", box: MailboxView, items: list[str]) -> bytes:
    found = await s.blocking(s.ctx.mailboxes.status, box.id, items)
    if found is None:
        raise nonexistent()
    view, counts = found
    values = {"UIDNEXT": view.uidnext, "UIDVALIDITY": view.uidvalidity, "RECENT": 0,
              "HIGHESTMODSEQ": view.highestmodseq, **counts}
    body = " ".join(f"{i} {values[i]}" for i in items).encode()
    return b"STATUS " + s.name_out(box.name) + b" (" + body + b")"


# --- SELECT, EXAMINE, UNSELECT, CLOSE ---------------------------------------------------


async def _select(s: "ImapSession", args: Reader, read_only: bool) -> str:
    from bridge.imapserver import qresync
    name = s.name_in(args.text("mailbox"))
    params = qresync.select_params(args.list_tokens("select parameters"), s.enabled) \
        if args.has_list() else qresync.SelectParams()
    args.end()
    if params.condstore:
        s.enabled.add("CONDSTORE")
    if s.selected is not None and s.enabled & {"QRESYNC", "IMAP4REV2"}:
        # RFC 7162 section 3.2.11, RFC 9051 section 7.1: the implicit close is announced.
        s.untagged(b"OK [CLOSED] previous mailbox closed")
    s.unselect()
    box = await resolve(s, name)
    if box.shared:                  # the trail shows who opened a contact point's mailbox, and when
        await s.blocking(s.ctx.mailboxes.record_access, s.account_id(), box.id, s.info(), read_only)
    sel, keywords = await s.select_mailbox(box, read_only)
    from bridge.imapserver.responses import flag_list
    system = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
    s.untagged(b"%d EXISTS" % len(sel.uids))
    s.untagged(b"0 RECENT")
    s.untagged(b"FLAGS " + flag_list(system + keywords))
    if read_only:                   # RFC 9051 section 7.1: nothing can be changed permanently
        s.untagged(b"OK [PERMANENTFLAGS ()] read-only mailbox")
    else:
        s.untagged(b"OK [PERMANENTFLAGS " + flag_list(system + keywords + ["\\*"]) + b"] flags permitted")
    s.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % sel.mailbox.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] predicted next UID" % sel.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] highest" % sel.highestmodseq)
    if params.qresync is not None:
        await qresync.resync(s, sel, params.qresync)
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
    from bridge.imapserver.store_cmds import expunge_silently
    await expunge_silently(s)                  # \Deleted, when read-write (RFC 9051 section 6.4.1)
    s.unselect()


# --- CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE -------------------------------------

_REFUSALS = {
    "nonexistent": nonexistent,
    "exists": lambda: No("mailbox already exists", "ALREADYEXISTS"),
    "haschildren": lambda: No("mailbox has inferior mailboxes; delete them first", "HASCHILDREN"),
    "noperm": lambda: No("mailboxes cannot be created in the shared namespace", "NOPERM"),
}


async def _change(s: "ImapSession", cannot: str, fn: Callable[..., object], *args: object) -> None:
    """Run a MailboxRepository change; its Refused reason becomes the NO reply."""
    try:
        await s.blocking(fn, *args)
    except Refused as exc:
        if exc.reason == "cannot":
            raise No(cannot, "CANNOT") from None
        raise _REFUSALS[exc.reason]() from None


def _new_name(name: str) -> str:
    """A name this account may give a mailbox of its own (CREATE, RENAME target)."""
    if names.in_shared_namespace(name):
        raise _REFUSALS["noperm"]()
    try:
        return names.validate(name)
    except names.InvalidName as exc:
        raise No(f"invalid mailbox name: {exc}", "CANNOT") from None


async def _own(s: "ImapSession", name: str, verb: str) -> MailboxView:
    """A mailbox of the account's own by `name`: shared ones are refused (they are seen, so
    saying so reveals nothing); names the account does not see are NONEXISTENT."""
    box = await resolve(s, name)
    if box.shared:
        raise No(f"shared mailboxes cannot be {verb}", "NOPERM")
    return box


@command("CREATE", AUTH)
async def create(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    name = s.name_in(args.text("mailbox"))
    args.end()
    if name.endswith(DELIMITER):     # RFC 9051 section 6.3.4: declares intent to create inferiors
        name = name[:-1]
    await _change(s, "mailbox cannot be created", s.ctx.mailboxes.create, s.account_id(), _new_name(name))


@command("DELETE", AUTH)
async def delete(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    name = s.name_in(args.text("mailbox"))
    args.end()
    box = await _own(s, name, "deleted")
    # INBOX, the special-use mailboxes and Receipts stay (RFC 9051 section 6.3.5 forbids
    # deleting INBOX; the others are where the bridge files letters, sent mail and receipts).
    await _change(s, "this mailbox cannot be deleted", s.ctx.mailboxes.delete, s.account_id(), box.name)
    if s.selected is not None and s.selected.mailbox.id == box.id:
        s.unselect()
        s.untagged(b"OK [CLOSED] mailbox deleted")
    s.notify_changed(box.id)                # sessions that have it selected close it (recheck_selected)


@command("RENAME", AUTH)
async def rename(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    old, new = s.name_in(args.text("mailbox")), s.name_in(args.text("new mailbox name"))
    args.end()
    box = await _own(s, old, "renamed")
    target = _new_name(new)
    if box.name == "INBOX":
        # RFC 9051 section 6.3.6 lets a server move INBOX's messages to the new name; we do
        # not: INBOX is where delivery files letters, and a client can MOVE them instead.
        raise No("INBOX cannot be renamed; move its messages instead", "CANNOT")
    await _change(s, "this mailbox cannot be renamed", s.ctx.mailboxes.rename, s.account_id(),
                  box.name, target)


@command("SUBSCRIBE", AUTH)
async def subscribe(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    name = s.name_in(args.text("mailbox"))
    args.end()
    await _change(s, "", s.ctx.mailboxes.subscribe, s.account_id(), name, True)


@command("UNSUBSCRIBE", AUTH)
async def unsubscribe(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    name = s.name_in(args.text("mailbox"))
    args.end()
    await _change(s, "shared mailboxes stay subscribed", s.ctx.mailboxes.subscribe, s.account_id(),
                  name, False)

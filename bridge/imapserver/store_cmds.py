"""Commands that change messages: STORE, EXPUNGE, UID EXPUNGE, COPY, MOVE, APPEND.

STORE (RFC 9051 section 6.4.6, with UNCHANGEDSINCE of RFC 7162) goes through
MailboxRepository.store_flags; the rest through store/entries.py, each as one
unit of the store's group commit.  Every successful write updates the
session's view (`Selected.tell` for flags the client got) or reports through
`sync()`, which is where EXPUNGE and VANISHED responses are written (highest
sequence number first), and tells other sessions (IDLE) through the events.  UIDPLUS (RFC
4315) answers COPYUID and APPENDUID; MOVE (RFC 6851) sends COPYUID as an
untagged OK before the expunges.  APPEND stores the blob (fsynced) before the
database unit commits, so an entry never names missing bytes; the literal was
already refused before "+" when over APPENDLIMIT (session.py).  Talks to the store
only through MailboxRepository and EntryWriter; imports no other command module.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from bridge.core.mimeinfo import analyze
from bridge.imapserver.errors import Bad, No
from bridge.imapserver.parser import Atom, ParseError, Reader, Token
from bridge.imapserver.registry import AUTH, SEL, command
from bridge.imapserver.responses import flag_list
from bridge.imapserver.sequences import uid_set_text, uids_for
from bridge.store.entries import EntryWriter, NewMessage
from bridge.store.mailboxes import EntryState, MailboxView

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession, Selected

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
# RFC 9051 flag-keyword = atom: ATOM-CHARs, i.e. no ( ) { SP CTL % * " \ ]
_KEYWORD = re.compile(r'^[!#$&\'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]{1,100}$')
_STORE_ITEM = re.compile(r"^([+-]?)FLAGS(\.SILENT)?$", re.IGNORECASE)
_DATE_TIME = re.compile(r"^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MAX_MESSAGE_ID = 998


def _writer(s: "ImapSession") -> EntryWriter:
    return EntryWriter(s.ctx.mailboxes.store)


def _read_only() -> No:
    return No("mailbox is read-only", "READ-ONLY")


def _trycreate() -> No:
    return No("no such mailbox", "TRYCREATE")


def parse_flags(tokens: list[Token]) -> list[str]:
    """Flags as IMAP writes them (system flags in their canonical case), without
    duplicates; BAD for anything that is not a storable flag."""
    out: list[str] = []
    for tok in tokens:
        if not isinstance(tok, Atom):
            raise ParseError("flags must be atoms")
        value = tok.value
        if value.startswith("\\"):
            flag = SYSTEM_FLAGS.get(value.lower())
            if flag is None:
                raise ParseError(f"cannot store flag {value[:40]}")
        elif _KEYWORD.match(value):
            flag = value
        else:
            raise ParseError("invalid keyword")
        if flag not in out:
            out.append(flag)
    return out


def _selected(s: "ImapSession") -> "Selected":
    assert s.selected is not None
    return s.selected


def _condstore(s: "ImapSession") -> bool:
    return bool(s.enabled & {"CONDSTORE", "QRESYNC"})


# --- STORE ------------------------------------------------------------------------


@command("STORE", SEL, uid=True)
async def store(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    sel = _selected(s)
    seqset = args.atom("sequence set")
    unchanged_since = _store_modifiers(args)
    match = _STORE_ITEM.match(args.atom("store item"))
    if not match:
        raise Bad("unknown STORE item")
    mode, silent = match.group(1) or "=", bool(match.group(2))
    flags = parse_flags(args.list_tokens("flags") if args.has_list() else args.tokens[args.pos:])
    args.pos = len(args.tokens)
    if mode != "=" and not flags:
        raise Bad("no flags given")
    uids = uids_for(sel, seqset, uid)
    if sel.read_only:
        raise _read_only()
    if unchanged_since is not None:
        s.enabled.add("CONDSTORE")                  # RFC 7162 section 3.1: an enabling command
    refused: list[int] = []
    if uids:
        changed, refused = await s.blocking(s.ctx.mailboxes.store_flags, sel.mailbox.id, uids, mode,
                                            flags, unchanged_since, s.account_id())
        unchanged: list[EntryState] = []
        if not silent:                              # FETCH FLAGS for every message addressed
            done = {e.uid for e in changed} | set(refused)
            rest = [u for u in uids if u not in done]
            unchanged = await s.blocking(s.ctx.mailboxes.flag_states, sel.mailbox.id, rest) if rest else []
        _report_store(s, sel, changed, unchanged, uid, silent)
    if uid:
        await s.sync(expunges=True)
    numbers = refused if uid else [n for n in (sel.seq_of(u) for u in refused) if n is not None]
    if numbers:
        return f"[MODIFIED {uid_set_text(numbers)}] conditional STORE failed"
    return "STORE completed"


def _report_store(s: "ImapSession", sel: "Selected", changed: list[EntryState], unchanged: list[EntryState],
                  uid: bool, silent: bool) -> None:
    """Send FETCH for the messages STORE addressed (`unchanged`: those it did not change, read
    for a non-silent STORE) and note what the client now knows."""
    for e in changed:
        sel.highestmodseq = max(sel.highestmodseq, e.modseq)
    for e in sorted(changed + unchanged, key=lambda e: e.uid):
        if e.uid not in sel.uids:
            continue
        sel.tell(e.uid, e.modseq)
        if not silent:
            s.untagged(_fetch_line(s, sel, e, uid, flags=True))
        elif _condstore(s):
            s.untagged(_fetch_line(s, sel, e, uid, flags=False))   # RFC 7162 section 3.2
    if changed:
        s.notify_changed()


def _store_modifiers(args: Reader) -> int | None:
    """(UNCHANGEDSINCE n) of RFC 7162; None when absent."""
    if not args.has_list():
        return None
    tokens = args.list_tokens("store modifiers")
    words = [t.value.upper() if isinstance(t, Atom) else "" for t in tokens]
    if len(words) == 2 and words[0] == "UNCHANGEDSINCE" and words[1].isdigit() and len(words[1]) <= 20:
        return int(words[1])
    raise Bad("unknown STORE modifier")


def _fetch_line(s: "ImapSession", sel: "Selected", e: EntryState, uid: bool, flags: bool) -> bytes:
    parts = []
    if uid:
        parts.append(b"UID %d" % e.uid)
    if flags:
        parts.append(b"FLAGS " + flag_list(e.flags))
    if _condstore(s):
        parts.append(b"MODSEQ (%d)" % e.modseq)
    return b"%d FETCH (" % (sel.seq_of(e.uid) or 0) + b" ".join(parts) + b")"


# --- EXPUNGE ----------------------------------------------------------------------


@command("EXPUNGE", SEL, uid=True)
async def expunge(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    sel = _selected(s)
    uids = None
    if uid:
        uids = uids_for(sel, args.atom("sequence set"), True)
    args.end()
    if sel.read_only:
        raise _read_only()
    if uids is None or uids:
        done = await s.blocking(_writer(s).expunge, sel.mailbox.id, uids)
        if done.uids:
            s.notify_changed()
    await s.sync(expunges=True)
    if _condstore(s):
        return f"[HIGHESTMODSEQ {sel.highestmodseq}] EXPUNGE completed"
    return "EXPUNGE completed"


async def expunge_silently(s: "ImapSession") -> None:
    """CLOSE (RFC 9051 section 6.4.1): remove \\Deleted messages without EXPUNGE responses."""
    sel = s.selected
    if sel is None or sel.read_only:
        return
    done = await s.blocking(_writer(s).expunge, sel.mailbox.id, None)
    if done.uids:
        s.notify_changed()


# --- COPY and MOVE ----------------------------------------------------------------


async def _target(s: "ImapSession", name: str) -> MailboxView:
    box = await s.blocking(s.ctx.mailboxes.find, s.account_id(), name)
    if box is None:
        raise _trycreate()
    return box


async def _copy(s: "ImapSession", args: Reader, uid: bool, move: bool) -> str:
    sel = _selected(s)
    seqset = args.atom("sequence set")
    name = s.name_in(args.text("mailbox"))
    args.end()
    uids = uids_for(sel, seqset, uid)
    if move and sel.read_only:
        raise _read_only()
    target = await _target(s, name)
    verb = "MOVE" if move else "COPY"
    if not uids:
        return f"{verb} completed"
    done = await s.blocking(_writer(s).copy, sel.mailbox.id, uids, target.id, move, s.account_id())
    for filed in done.filed:
        s.ctx.events.publish(filed)
    code = f"[COPYUID {done.uidvalidity} {uid_set_text(done.source_uids)} {uid_set_text(done.target_uids)}]"
    if not done.source_uids:
        return f"{verb} completed"
    if move:
        s.untagged(f"OK {code} moved".encode())
        s.notify_changed()
        await s.sync(expunges=True)
        return f"{verb} completed"
    if target.id == sel.mailbox.id or uid:
        await s.sync(expunges=uid)
    return f"{code} {verb} completed"


@command("COPY", SEL, uid=True)
async def copy(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    return await _copy(s, args, uid, move=False)


@command("MOVE", SEL, uid=True)
async def move(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    return await _copy(s, args, uid, move=True)


# --- APPEND -----------------------------------------------------------------------


def parse_date_time(raw: bytes) -> dt.datetime:
    """RFC 9051 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded)."""
    match = _DATE_TIME.match(raw.decode("ascii", "replace"))
    if not match or match.group(2).lower() not in _MONTHS:
        raise ParseError("invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
    try:
        offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
        return dt.datetime(int(year), _MONTHS.index(mon.lower()) + 1, int(day), int(hh), int(mm),
                           int(ss), tzinfo=dt.timezone(offset)).astimezone(dt.timezone.utc)
    except ValueError:
        raise ParseError("invalid date-time") from None


@command("APPEND", AUTH)
async def append(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    name = s.name_in(args.text("mailbox"))
    flags = parse_flags(args.list_tokens("flags")) if args.has_list() else []
    date = None
    if len(args.tokens) - args.pos >= 2:
        tok = args.next("date-time")
        if not isinstance(tok, bytes):
            raise ParseError("expected date-time")
        date = parse_date_time(tok)
    raw = args.next("message")
    if not isinstance(raw, bytes):
        raise ParseError("expected the message as a literal")
    args.end()
    if len(raw) > s.ctx.appendlimit:
        raise No("message too large", "TOOBIG")
    box = await _target(s, name)
    writer, principal = _writer(s), s.principal
    assert principal is not None
    info = await s.blocking(analyze, raw)
    message_id = (info.message_id or "")[:MAX_MESSAGE_ID]
    known = await s.blocking(writer.sent_copy, box.id, principal.account_id, message_id)
    if known is not None:
        return f"[APPENDUID {known[0]} {known[1]}] APPEND completed"
    sha = await s.blocking(s.ctx.blobs.put, raw)          # durable before the entry commits
    now = s.ctx.mailboxes.store.clock.now()
    msg = NewMessage(tenant_id=principal.tenant_id, account_id=principal.account_id,
                     party_id=principal.party_id, from_address=principal.login, message_id=message_id,
                     in_reply_to=(info.in_reply_to[0][:MAX_MESSAGE_ID] if info.in_reply_to else None),
                     references=info.references, subject=info.subject, sha256=sha, size=len(raw),
                     info=info, flags=flags, internal_date=date or now, session_id=s.id)
    done = await s.blocking(writer.append, box.id, msg)
    if done.filed is not None:
        s.ctx.events.publish(done.filed)
    if s.selected is not None and s.selected.mailbox.id == box.id:
        await s.sync(expunges=True)
    return f"[APPENDUID {done.uidvalidity} {done.uid}] APPEND completed"

"""SEARCH and UID SEARCH (RFC 9051 section 6.4.4), answered by the store (store/search.py).

Parses the search program into the store's key tree: every RFC 9051 key, the
IMAP4rev1 keys NEW / OLD / RECENT / UNRECENT (this server never sets \\Recent, so
RECENT and NEW match nothing), RFC 7162 MODSEQ, sequence sets and parenthesised
groups.  Sequence numbers become UID ranges through the session's view of the
mailbox, and results go back through the same view, so a SEARCH never names a
message the client has not been told about.

`RETURN (MIN MAX ALL COUNT SAVE)` (RFC 4731, RFC 5182, RFC 9051) is answered with
ESEARCH, as is every SEARCH once IMAP4rev2 is enabled; otherwise the IMAP4rev1
`* SEARCH n n n`.  The `$` of a SAVE lasts until another mailbox is selected.
Imports the store's key tree (store/search.py), never SQLAlchemy or the models.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from bridge.imapserver.errors import Bad, No
from bridge.imapserver.parser import CLOSE, OPEN, Atom, ParseError, Reader, parse_sequence_set
from bridge.imapserver.registry import SEL, command
from bridge.imapserver.responses import quoted
from bridge.imapserver.sequences import uid_set_text
from bridge.store import search as st

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession, Selected

CHARSETS = ("UTF-8", "US-ASCII")
MAX_DEPTH = 64          # NOT / OR / parentheses, nested
MAX_KEYS = 1000         # keys in one command
RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")
_SEQUENCE = re.compile(r"^[0-9*:,]+$|^\$$")
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_MONTHS = {name: i + 1 for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}

_FLAG_KEYS = {"ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
              "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
              "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
              "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
              "UNSEEN": ("\\Seen", False)}
_SIMPLE = {"ALL": st.All, "OLD": st.All, "UNRECENT": st.All,     # RFC 3501; \Recent is never set
           "NEW": st.Nothing, "RECENT": st.Nothing}
_TEXT_KEYS = {"BCC": "bcc", "BODY": "body", "CC": "cc", "FROM": "from", "SUBJECT": "subject",
              "TEXT": "text", "TO": "to"}
_DATE_KEYS = {"BEFORE": (st.InternalDate, "before"), "ON": (st.InternalDate, "on"),
              "SINCE": (st.InternalDate, "since"), "SENTBEFORE": (st.SentDate, "before"),
              "SENTON": (st.SentDate, "on"), "SENTSINCE": (st.SentDate, "since")}


class _Program:
    """Recursive-descent parser of search keys over the command's tokens."""

    def __init__(self, args: Reader, sel: "Selected", saved: list[int]) -> None:
        self.args, self.sel, self.saved = args, sel, saved
        self.count = 0
        self.uses_modseq = False

    def keys_until_end(self) -> st.Key:
        keys = [self.key(0)]
        while not self.args.at_end():
            keys.append(self.key(0))
        return keys[0] if len(keys) == 1 else st.And(keys)

    def key(self, depth: int) -> st.Key:
        if depth > MAX_DEPTH:
            raise Bad("search keys nested too deeply")
        self.count += 1
        if self.count > MAX_KEYS:
            raise No("too many search keys", "LIMIT")
        tok = self.args.next("search key")
        if tok is OPEN:
            return self.group(depth)
        if not isinstance(tok, Atom):
            raise ParseError("expected a search key")
        if _SEQUENCE.match(tok.value):
            return self.sequence(tok.value, uid=False)
        word = tok.value.upper()
        if word in _SIMPLE:
            return _SIMPLE[word]()
        if word in _FLAG_KEYS:
            return st.Flag(*_FLAG_KEYS[word])
        if word in _TEXT_KEYS:
            return st.Text(_TEXT_KEYS[word], self.string())
        if word in _DATE_KEYS:
            cls, op = _DATE_KEYS[word]
            return cls(op, self.date())
        if word in ("NOT", "OR"):
            return st.Not(self.key(depth + 1)) if word == "NOT" else \
                st.Or(self.key(depth + 1), self.key(depth + 1))
        handler = {"KEYWORD": self.keyword, "UNKEYWORD": self.keyword, "HEADER": self.header,
                   "LARGER": self.size, "SMALLER": self.size, "UID": self.uid_set,
                   "MODSEQ": self.modseq}.get(word)
        if handler is None:
            raise ParseError(f"unknown search key {tok.value[:40]!r}")
        return handler(word)

    def group(self, depth: int) -> st.Key:
        keys = []
        while self.args.peek() is not CLOSE:
            keys.append(self.key(depth + 1))
        self.args.next()
        if not keys:
            raise ParseError("empty parentheses in search")
        return keys[0] if len(keys) == 1 else st.And(keys)

    def keyword(self, word: str) -> st.Key:
        return st.Flag(self.args.atom("keyword"), word == "KEYWORD")

    def header(self, word: str) -> st.Key:
        name = self.string("header field name")
        if not name or any(c in name for c in ": \t\r\n"):
            raise ParseError("bad header field name")
        return st.Text("header", self.string(), header=name)

    def size(self, word: str) -> st.Key:
        return st.Size(word == "LARGER", self.args.number("size"))

    def uid_set(self, word: str) -> st.Key:
        return self.sequence(self.args.atom("UID set"), uid=True)

    def string(self, what: str = "search string") -> str:
        return self.args.text(what)

    def date(self) -> dt.date:
        tok = self.args.next("date")
        text = tok.value if isinstance(tok, Atom) else tok.decode("ascii", "replace") \
            if isinstance(tok, bytes) else ""
        match = _DATE.match(text)
        month = _MONTHS.get(match.group(2).upper()) if match else None
        if not match or month is None:
            raise ParseError("bad date (expected e.g. 1-Feb-2026)")
        try:
            return dt.date(int(match.group(3)), month, int(match.group(1)))
        except ValueError:
            raise ParseError("bad date (expected e.g. 1-Feb-2026)") from None

    def modseq(self, word: str) -> st.Key:
        # RFC 7162: MODSEQ [entry-name entry-type-req] mod-sequence-valzer
        if isinstance(self.args.peek(), bytes):
            self.args.next()
            if self.args.atom("entry type").lower() not in ("priv", "shared", "all"):
                raise ParseError("bad MODSEQ entry type")
        self.uses_modseq = True
        return st.ModSeq(self.args.number("mod-sequence"))

    def sequence(self, text: str, uid: bool) -> st.Key:
        seqset = parse_sequence_set(text)
        if seqset.last_result:
            return st.UidSet(_ranges(self.saved))
        uids = self.sel.uids
        if uid:
            return st.UidSet(seqset.resolve(uids.last))
        ranges = []
        for lo, hi in seqset.resolve(len(uids)):
            lo, hi = max(lo, 1), min(hi, len(uids))
            if lo <= hi:                     # numbers beyond the mailbox name nothing
                ranges.append((uids.uid_at(lo), uids.uid_at(hi)))
        return st.UidSet(ranges)


def _ranges(uids: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if out and out[-1][1] == uid - 1:
            out[-1] = (out[-1][0], uid)
        else:
            out.append((uid, uid))
    return out


def _return_options(args: Reader) -> list[str] | None:
    """RETURN (...) options; None when the command has no RETURN."""
    tok = args.peek()
    if not (isinstance(tok, Atom) and tok.upper() == "RETURN"):
        return None
    args.next()
    options = [o.upper() for o in args.atoms_list("RETURN options")]
    for option in options:
        if option not in RETURN_OPTIONS:
            raise Bad("unknown RETURN option")
    return options or ["ALL"]


def _charset(args: Reader) -> None:
    tok = args.peek()
    if isinstance(tok, Atom) and tok.upper() == "CHARSET":
        args.next()
        name = args.astring("charset").decode("ascii", "replace").upper()
        if name not in CHARSETS:
            raise No("unsupported charset", "BADCHARSET (" + " ".join(CHARSETS) + ")")


def saved_result(s: "ImapSession") -> list[int]:
    """The UIDs of the last SEARCH RETURN (SAVE) in the selected mailbox (RFC 5182 `$`);
    sequences.uids_for resolves `$` for FETCH, STORE, COPY and MOVE the same way."""
    return list(s.selected.search_saved) if s.selected is not None else []


def _save(s: "ImapSession", uids: list[int]) -> None:
    if s.selected is not None:
        s.selected.search_saved = list(uids)


@command("SEARCH", SEL, uid=True)
async def search(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    sel = s.selected
    assert sel is not None
    options = _return_options(args)
    try:
        _charset(args)
        program = _Program(args, sel, saved_result(s))
        key = program.keys_until_end()
        if program.uses_modseq:
            s.enabled.add("CONDSTORE")
        last = sel.uids.last
        hits = await s.blocking(st.search, s.ctx.mailboxes.store, s.ctx.blobs.get, sel.mailbox.id, key, last)
    except Exception:
        if options and "SAVE" in options:
            _save(s, [])                        # RFC 5182: a failed SEARCH empties $
        raise
    hits = [h for h in hits if h.uid in sel.uids]
    if options is None and "IMAP4REV2" in s.enabled:
        options = ["ALL"]
    if options is None:
        _plain(s, sel, hits, uid, program.uses_modseq)
    else:
        _extended(s, sel, tag, hits, uid, options, program.uses_modseq)
    await s.sync(expunges=uid)


def _number(sel: "Selected", hit: st.Hit, uid: bool) -> int:
    return hit.uid if uid else sel.seq_of(hit.uid) or 0


def _plain(s: "ImapSession", sel: "Selected", hits: list[st.Hit], uid: bool, modseq: bool) -> None:
    line = b"SEARCH" + b"".join(b" %d" % _number(sel, h, uid) for h in hits)
    if modseq and hits:
        line += b" (MODSEQ %d)" % max(h.modseq for h in hits)
    s.untagged(line)


def _extended(s: "ImapSession", sel: "Selected", tag: bytes, hits: list[st.Hit], uid: bool,
              options: list[str], modseq: bool) -> None:
    first, last = (hits[0], hits[-1]) if hits else (None, None)
    if "SAVE" in options:
        if {"ALL", "COUNT"} & set(options) or not {"MIN", "MAX"} & set(options):
            _save(s, [h.uid for h in hits])
        else:
            _save(s, [h.uid for h in (first if "MIN" in options else None,
                                      last if "MAX" in options else None) if h is not None])
        if options == ["SAVE"] or set(options) == {"SAVE"}:
            return                               # RFC 9051 6.4.4.1: SAVE alone, no ESEARCH
    parts: list[bytes] = [b"ESEARCH (TAG " + quoted(tag.decode("ascii", "replace")) + b")"]
    if uid:
        parts.append(b"UID")
    reported: list[st.Hit] = []
    if "MIN" in options and first is not None:
        parts.append(b"MIN %d" % _number(sel, first, uid))
        reported.append(first)
    if "MAX" in options and last is not None:
        parts.append(b"MAX %d" % _number(sel, last, uid))
        reported.append(last)
    if "ALL" in options and hits:
        parts.append(b"ALL " + uid_set_text([_number(sel, h, uid) for h in hits]).encode())
    if "COUNT" in options:
        parts.append(b"COUNT %d" % len(hits))
    if {"ALL", "COUNT"} & set(options):
        reported = hits
    if modseq and reported:
        parts.append(b"MODSEQ %d" % max(h.modseq for h in reported))
    s.untagged(b" ".join(parts))


__all__: list[Any] = ["search", "saved_result"]

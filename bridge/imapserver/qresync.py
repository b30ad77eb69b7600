"""CONDSTORE and QRESYNC (RFC 7162): SELECT parameters, the resync after SELECT, and the
FETCH modifiers CHANGEDSINCE and VANISHED.

`SELECT mbox (QRESYNC (uidvalidity modseq [known-uids [seq-match]]))` answers, after
the usual SELECT data, `* VANISHED (EARLIER) uids` for the UIDs expunged since
`modseq` (the store keeps a tombstone per expunged UID, so the answer is exact and
seq-match is accepted but not needed) and one `* n FETCH (UID u FLAGS (..) MODSEQ (m))`
per message changed since `modseq`; nothing when the UIDVALIDITY differs.
`UID FETCH set items (CHANGEDSINCE n VANISHED)` sends the VANISHED (EARLIER) of
`set` first.  Knows the store only through the session's MailboxRepository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from bridge.imapserver.errors import Bad
from bridge.imapserver.parser import CLOSE, OPEN, Atom, ParseError, SequenceSet, Token, parse_sequence_set
from bridge.imapserver.sequences import uid_set_text

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession, Selected


@dataclass(frozen=True)
class Qresync:
    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None


@dataclass(frozen=True)
class SelectParams:
    condstore: bool = False
    qresync: Qresync | None = None


def select_params(tokens: list[Token], enabled: set[str]) -> SelectParams:
    """The parenthesised SELECT/EXAMINE parameters (RFC 7162 sections 3.1.8 and 3.2.5)."""
    condstore, qresync, i = False, None, 0
    while i < len(tokens):
        word = _word(tokens[i])
        if word == "CONDSTORE":
            condstore, i = True, i + 1
        elif word == "QRESYNC" and i + 1 < len(tokens) and tokens[i + 1] is OPEN:
            end = _close_of(tokens, i + 1)
            if "QRESYNC" not in enabled:
                # RFC 7162 section 3.2.5: BAD unless the client did ENABLE QRESYNC.
                raise Bad("QRESYNC needs ENABLE QRESYNC first")
            qresync, i = _qresync(tokens[i + 2:end]), end + 1
        else:
            raise Bad("unknown SELECT parameter")
    return SelectParams(condstore, qresync)


def _qresync(tokens: list[Token]) -> Qresync:
    """uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data]"""
    words = [_word(t) if isinstance(t, Atom) else None for t in tokens]
    if len(tokens) < 2 or not all(w and w.isdigit() and len(w) <= 20 for w in words[:2]):
        raise ParseError("QRESYNC needs UIDVALIDITY and MODSEQ")
    known = None
    rest = tokens[2:]
    if rest and isinstance(rest[0], Atom):
        known, rest = parse_sequence_set(rest[0].value), rest[1:]
    if rest:
        # seq-match-data: ( known-sequence-set SP known-uid-set ); we keep every expunged UID,
        # so the answer is exact without it, but it must still be well formed.
        inner = rest[1:-1] if rest[0] is OPEN and rest[-1] is CLOSE else None
        if inner is None or len(inner) != 2 or not all(isinstance(t, Atom) for t in inner):
            raise ParseError("bad QRESYNC sequence match data")
        for t in inner:
            parse_sequence_set(t.value)  # type: ignore[union-attr]
    return Qresync(int(words[0] or 0), int(words[1] or 0), known)


def _word(token: Token) -> str:
    return token.value.upper() if isinstance(token, Atom) else ""


def _close_of(tokens: list[Token], open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(tokens)):
        depth += 1 if tokens[j] is OPEN else -1 if tokens[j] is CLOSE else 0
        if depth == 0:
            return j
    raise ParseError("unbalanced parentheses")


async def resync(s: "ImapSession", sel: "Selected", q: Qresync) -> None:
    """After SELECT data: what changed since the client's MODSEQ (RFC 7162 section 3.2.5.1)."""
    if q.uidvalidity != sel.mailbox.uidvalidity:
        return
    known = _member(q.known_uids, sel.uidnext - 1) if q.known_uids else (lambda uid: True)
    # Only the entries changed after the client's MODSEQ are read (ix_mailbox_entries_modseq).
    _, changed, gone = await s.blocking(s.ctx.mailboxes.changes, sel.mailbox.id, q.modseq)
    gone = [uid for uid in gone if known(uid)]
    if gone:
        s.untagged(b"VANISHED (EARLIER) " + uid_set_text(gone).encode())
    for e in changed:
        if e.uid in sel.uids and known(e.uid):
            sel.tell(e.uid, e.modseq)
            s.untagged(s.fetch_flags_line(sel, e))


def _member(seqset: SequenceSet, largest: int) -> Callable[[int], bool]:
    ranges = seqset.resolve(largest)
    return lambda uid: any(lo <= uid <= hi for lo, hi in ranges)


def fetch_modifiers(tokens: list[Token], s: "ImapSession", uid: bool) -> tuple[int | None, bool]:
    """(CHANGEDSINCE n [VANISHED]) of FETCH (RFC 7162 sections 3.1.4 and 3.2.6):
    (changedsince or None, vanished)."""
    changedsince, vanished, i = None, False, 0
    while i < len(tokens):
        word = _word(tokens[i])
        if word == "CHANGEDSINCE" and changedsince is None and i + 1 < len(tokens) \
                and _word(tokens[i + 1]).isdigit() and len(_word(tokens[i + 1])) <= 20:
            changedsince, i = int(_word(tokens[i + 1])), i + 2
        elif word == "VANISHED" and not vanished:
            vanished, i = True, i + 1
        else:
            raise Bad("unknown FETCH modifier")
    if vanished and (not uid or changedsince is None or "QRESYNC" not in s.enabled):
        # RFC 7162 section 3.2.6: only UID FETCH, with CHANGEDSINCE, after ENABLE QRESYNC.
        raise Bad("VANISHED needs UID FETCH with CHANGEDSINCE after ENABLE QRESYNC")
    return changedsince, vanished


async def send_vanished(s: "ImapSession", sel: "Selected", uid_set: str, since: int) -> None:
    """`* VANISHED (EARLIER)` for the UIDs of `uid_set` expunged after `since`."""
    wanted = _member(parse_sequence_set(uid_set), sel.uidnext - 1)
    gone = [u for u in await s.blocking(s.ctx.mailboxes.vanished, sel.mailbox.id, since) if wanted(u)]
    if gone:
        s.untagged(b"VANISHED (EARLIER) " + uid_set_text(gone).encode())

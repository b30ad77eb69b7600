"""Mailboxes as an IMAP session sees them: names, state, entries, flags.

Every method takes the account id and resolves mailboxes only among those the
account may see: its own, and the mailboxes of contact points it is granted,
shown under `Shared/<contact point>/` (DESIGN.md section 6).  A name that does
not resolve for this account is simply unknown (None), whether or not it
exists for someone else.  Returns plain value objects; no ORM objects leave.
CREATE/DELETE/RENAME/SUBSCRIBE change only the account's own mailboxes and say
why they cannot with `Refused(reason)`; names come validated (core/mailboxnames.py).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

from sqlalchemy import String, Text, case, cast, delete, func, literal_column, select, type_coerce, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.core import mailboxnames as names
from bridge.core.audit import AuditEvent
from bridge.store import models as m, receipts

SHARED_PREFIX = names.SHARED_PREFIX
# Mailboxes every account keeps: neither deleted nor renamed (besides the special-use ones).
PERMANENT = frozenset({"INBOX", "Receipts"})
SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")


@dataclass(frozen=True)
class MailboxView:
    id: int
    name: str                      # as this account sees it, e.g. "INBOX", "Shared/jobcenter/INBOX"
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    shared: bool


@dataclass(frozen=True)
class EntryState:
    uid: int
    modseq: int
    flags: tuple[str, ...]         # system flags and keywords together, as IMAP shows them


@dataclass(frozen=True)
class EntryData:
    """FETCH data of one entry.  The stored analysis stays JSON text, and the internal date
    the database's value, until a FETCH item asks for them: FETCH (FLAGS ENVELOPE) of a
    large mailbox decodes no BODYSTRUCTURE and parses no date."""

    uid: int
    modseq: int
    flags: tuple[str, ...]
    stored_date: Any               # naive UTC: a datetime, or its text (SQLite)
    size: int
    sha256: str
    header_size: int
    envelope_json: str
    body_json: str

    @cached_property
    def envelope(self) -> list[Any]:
        return json.loads(self.envelope_json)

    @cached_property
    def body(self) -> dict[str, Any]:
        return json.loads(self.body_json)

    @property
    def internal_date(self) -> dt.datetime:
        when = self.stored_date
        if isinstance(when, str):
            when = dt.datetime.fromisoformat(when)
        return when.replace(tzinfo=dt.timezone.utc)


def _flags(entry: Any) -> tuple[str, ...]:
    return _flag_tuple(entry.flags, entry.keywords)


def _flag_tuple(flags: str, keywords: str) -> tuple[str, ...]:
    """System flags and keywords together, as IMAP shows them."""
    return tuple(flags.split() + keywords.split())


class MailboxRepository:
    """IMAP-facing queries over the SqlStore's sessions."""

    def __init__(self, store: Any) -> None:
        self.store = store

    # --- which mailboxes an account sees ----------------------------------------------

    def mailboxes(self, account_id: int) -> list[MailboxView]:
        with self.store.ro() as s:
            return self._visible(s, account_id)

    def _visible(self, s: Session, account_id: int) -> list[MailboxView]:
        own = s.scalars(select(m.Mailbox).where(m.Mailbox.account_id == account_id).order_by(m.Mailbox.id))
        out = [_view(b, b.name, shared=False) for b in own]
        shared = s.execute(select(m.Mailbox, m.ContactPoint.address).join(
            m.ContactPoint, m.ContactPoint.id == m.Mailbox.contact_point_id).join(
            m.Grant, m.Grant.contact_point_id == m.ContactPoint.id).where(
            m.Grant.account_id == account_id).order_by(m.Mailbox.id))
        for box, address in shared:
            out.append(_view(box, f"{SHARED_PREFIX}/{address.split('@')[0]}/{box.name}", shared=True))
        return out

    def find(self, account_id: int, name: str) -> MailboxView | None:
        """The mailbox this account calls `name` ("INBOX" in any case), or None, also for
        names that are not valid (mailboxnames.validate) or belong to someone else."""
        if not names.is_valid(name):
            return None
        wanted = names.canonical(name)
        return next((b for b in self.mailboxes(account_id) if b.name == wanted), None)

    def can_access(self, account_id: int, mailbox_id: int) -> bool:
        """Is the mailbox the account's own, or of a contact point it is (still) granted?"""
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None:
                return False
            if box.account_id is not None:
                return box.account_id == account_id
            return s.get(m.Grant, (box.contact_point_id, account_id)) is not None

    # --- changing the account's own mailboxes (CREATE, DELETE, RENAME, SUBSCRIBE) -------
    # Each raises Refused(reason) instead of changing anything when it cannot be done.
    # Names are already validated and canonical (mailboxnames.validate); shared
    # mailboxes are never changed here.

    def create(self, account_id: int, name: str) -> MailboxView:
        """Create `name` and any missing superior names (RFC 9051 section 6.3.4), each
        with a fresh random UIDVALIDITY."""
        if names.in_shared_namespace(name):
            raise Refused("noperm")
        try:
            with self.store.tx() as s:
                have = set(s.scalars(select(m.Mailbox.name).where(m.Mailbox.account_id == account_id)))
                if name in have:
                    raise Refused("exists")
                for wanted in names.parents(name) + [name]:
                    if wanted not in have:
                        box = _new_mailbox(s, account_id, wanted, self.store.clock.now())
                return _view(box, box.name, shared=False)
        except IntegrityError:            # created concurrently by another session
            raise Refused("exists") from None

    def delete(self, account_id: int, name: str) -> None:
        """Delete an own mailbox without inferiors, and its entries (RFC 9051 section 6.3.5)."""
        with self.store.tx() as s:
            box = _own(s, account_id, name)
            if box.name in PERMANENT or box.special_use:
                raise Refused("cannot")
            if s.scalar(select(m.Mailbox.id).where(m.Mailbox.account_id == account_id,
                                                   m.Mailbox.name.startswith(name + names.DELIMITER,
                                                                             autoescape=True)).limit(1)):
                raise Refused("haschildren")
            s.execute(delete(m.MailboxEntry).where(m.MailboxEntry.mailbox_id == box.id))
            s.execute(delete(m.Mailbox).where(m.Mailbox.id == box.id))   # expunged rows cascade

    def rename(self, account_id: int, old: str, new: str) -> None:
        """Rename an own mailbox and its inferiors (RFC 9051 section 6.3.6), creating missing
        superior names of `new`.  UIDVALIDITY and UIDs stay.  INBOX is not renamed."""
        if names.in_shared_namespace(new):
            raise Refused("noperm")
        try:
            with self.store.tx() as s:
                self._rename(s, account_id, old, new)
        except IntegrityError:
            raise Refused("exists") from None

    def _rename(self, s: Session, account_id: int, old: str, new: str) -> None:
        box = _own(s, account_id, old)
        if box.name in PERMANENT or box.special_use:
            raise Refused("cannot")
        own = {b.name: b for b in s.scalars(select(m.Mailbox).where(m.Mailbox.account_id == account_id))}
        if new in own:
            raise Refused("exists")
        if names.is_inferior(new, old):
            raise Refused("cannot")
        moving = [b for n, b in own.items() if n == old or names.is_inferior(n, old)]
        renamed = {b.name: new + b.name[len(old):] for b in moving}
        if any(len(n.encode()) > names.MAX_NAME_BYTES or n in own for n in renamed.values()):
            raise Refused("cannot")
        for b in moving:
            b.name = renamed[b.name]
        s.flush()
        for wanted in names.parents(new):
            if s.scalar(select(m.Mailbox.id).where(m.Mailbox.account_id == account_id,
                                                   m.Mailbox.name == wanted)) is None:
                _new_mailbox(s, account_id, wanted, self.store.clock.now())

    def subscribe(self, account_id: int, name: str, subscribed: bool) -> None:
        """Set the subscription of a mailbox the account sees.  Shared mailboxes are always
        subscribed (their row is shared by every grantee): SUBSCRIBE is a no-op, UNSUBSCRIBE
        is refused."""
        view = self.find(account_id, name)
        if view is None:
            raise Refused("nonexistent")
        if view.shared:
            if not subscribed:
                raise Refused("cannot")
            return
        with self.store.tx() as s:
            s.execute(update(m.Mailbox).where(m.Mailbox.id == view.id, m.Mailbox.account_id == account_id)
                      .values(subscribed=subscribed))

    def view(self, mailbox_id: int) -> MailboxView | None:
        """The mailbox's current counters (None once it is deleted)."""
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            return None if box is None else _view(box, box.name, shared=box.contact_point_id is not None)

    def select_state(self, mailbox_id: int) -> tuple[MailboxView | None, list[tuple[int, int]], list[str]]:
        """What SELECT tells (RFC 9051 section 6.3.2): the mailbox's counters, its UIDs as
        (first, last) runs of consecutive UIDs (all below the UIDNEXT shown), and the
        keywords its messages carry.  Reads no entry rows when it need not: see `_uid_runs`."""
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None:
                return None, [], []
            view = _view(box, box.name, shared=box.contact_point_id is not None)
            return view, _uid_runs(s, mailbox_id, box.uidnext), _keywords(s, mailbox_id)

    def status(self, mailbox_id: int, items: Iterable[str]) -> tuple[MailboxView, dict[str, int]] | None:
        """STATUS data (RFC 9051 section 6.3.11) by aggregate queries: MESSAGES, UNSEEN,
        DELETED and SIZE as asked; None once the mailbox is deleted."""
        wanted = set(items)
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None:
                return None
            here = _E.mailbox_id == mailbox_id
            columns = [func.count()]
            if "UNSEEN" in wanted:
                columns.append(func.sum(case((_E.flags.contains("\\Seen", autoescape=True), 0), else_=1)))
            if "DELETED" in wanted:
                columns.append(func.sum(case((_E.flags.contains("\\Deleted", autoescape=True), 1), else_=0)))
            row = list(s.execute(select(*columns).where(here)).one())
            values = {"MESSAGES": row.pop(0)}
            for name in ("UNSEEN", "DELETED"):
                if name in wanted:
                    values[name] = row.pop(0) or 0
            if "SIZE" in wanted:
                values["SIZE"] = s.scalar(select(func.coalesce(func.sum(m.Content.size), 0)).join(
                    _E, _E.sha256 == m.Content.sha256).where(here))
            return _view(box, box.name, shared=box.contact_point_id is not None), values

    def flag_states(self, mailbox_id: int, uids: list[int]) -> list[EntryState]:
        """The current flags and MODSEQ of the given UIDs (those that still exist), in UID order."""
        wanted = sorted(set(uids))
        out: list[EntryState] = []
        with self.store.ro() as s:
            for chunk in range(0, len(wanted), 500):
                out += [EntryState(uid, modseq, _flag_tuple(flags, keywords)) for uid, modseq, flags, keywords
                        in s.execute(select(_E.uid, _E.modseq, _E.flags, _E.keywords).where(
                            _E.mailbox_id == mailbox_id, _E.uid.in_(wanted[chunk:chunk + 500])).order_by(_E.uid))]
        return out

    def changes(self, mailbox_id: int, since_modseq: int
                ) -> tuple[MailboxView | None, list[EntryState], list[int]]:
        """What changed after MODSEQ `since_modseq` (a session's NOOP/IDLE update): the
        mailbox's counters, read first, then the entries added or changed and the UIDs
        expunged after it.  Every change raises the MODSEQ, so nothing is missed."""
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None:
                return None, [], []
            view = _view(box, box.name, shared=box.contact_point_id is not None)
            rows = s.execute(select(m.MailboxEntry.uid, m.MailboxEntry.modseq, m.MailboxEntry.flags,
                                    m.MailboxEntry.keywords).where(
                m.MailboxEntry.mailbox_id == mailbox_id, m.MailboxEntry.modseq > since_modseq)
                .order_by(m.MailboxEntry.uid))
            changed = [EntryState(uid, modseq, _flag_tuple(flags, keywords))
                       for uid, modseq, flags, keywords in rows]
            gone = list(s.scalars(select(m.Expunged.uid).where(
                m.Expunged.mailbox_id == mailbox_id, m.Expunged.modseq > since_modseq)
                .order_by(m.Expunged.uid)))
            return view, changed, gone

    def vanished(self, mailbox_id: int, since_modseq: int) -> list[int]:
        """UIDs expunged from the mailbox with a MODSEQ above `since_modseq`, ascending
        (QRESYNC VANISHED (EARLIER), RFC 7162 section 3.2.5)."""
        with self.store.ro() as s:
            return list(s.scalars(select(m.Expunged.uid).where(
                m.Expunged.mailbox_id == mailbox_id, m.Expunged.modseq > since_modseq)
                .order_by(m.Expunged.uid)))

    def entries(self, mailbox_id: int, uids: Iterable[int]) -> list[EntryData]:
        """FETCH data for the given UIDs (those that still exist), in UID order.  Plain rows,
        no ORM objects; a run of consecutive UIDs is one BETWEEN."""
        uid_list = sorted(set(uids))
        out: list[EntryData] = []
        with self.store.ro() as s:
            for chunk in range(0, len(uid_list), 500):
                part = uid_list[chunk:chunk + 500]
                which = _E.uid.between(part[0], part[-1]) if part[-1] - part[0] == len(part) - 1 \
                    else _E.uid.in_(part)
                rows = s.execute(select(*_FETCH_COLUMNS).join(m.Content, m.Content.sha256 == _E.sha256).where(
                    _E.mailbox_id == mailbox_id, which).order_by(_E.uid))
                out += [EntryData(uid, modseq, _flag_tuple(flags, keywords), *rest)
                        for uid, modseq, flags, keywords, *rest in rows]
        return out

    # --- flags -----------------------------------------------------------------------

    def record_access(self, account_id: int, mailbox_id: int, ctx: Any, read_only: bool) -> None:
        """A `mailbox.access` event in the contact point's tenant chain: staff opened one of
        its shared mailboxes (SELECT, or EXAMINE when `read_only`)."""
        with self.store.tx() as s:
            row = s.execute(select(m.Account.login, m.ContactPoint.address, m.Tenant.name).select_from(
                m.Mailbox).join(m.ContactPoint, m.ContactPoint.id == m.Mailbox.contact_point_id).join(
                m.Tenant, m.Tenant.id == m.ContactPoint.tenant_id).join(
                m.Account, m.Account.id == account_id).where(m.Mailbox.id == mailbox_id)).first()
            if row is None:
                return
            login, address, chain = row
            self.store._audit(s, AuditEvent(
                time=self.store.clock.now(), chain=chain, kind="mailbox.access", result="ok", actor=login,
                subject=address, protocol=ctx.protocol, session_id=ctx.session_id,
                details={"mailbox": "INBOX", "mode": "examine" if read_only else "select", "ip": ctx.ip}))

    def store_flags(self, mailbox_id: int, uids: list[int], mode: str, flags: list[str],
                    unchanged_since: int | None = None,
                    actor: int | None = None) -> tuple[list[EntryState], list[int]]:
        """Set (mode "="), add ("+") or remove ("-") flags.  Returns (changed entries with
        their new MODSEQ, UIDs refused because they changed after `unchanged_since`).
        \\Seen and $Handling added by the account `actor` may owe receipts (a read with
        consent, handling started), recorded in the same transaction (store/receipts.py)."""
        system = {f for f in flags if f.startswith("\\")}
        keywords = {f for f in flags if not f.startswith("\\")}

        def unit(s: Session) -> tuple[list[EntryState], list[int]]:
            # populate_existing: units sharing the session may have changed rows with Core statements.
            box = s.scalars(select(m.Mailbox).where(m.Mailbox.id == mailbox_id).with_for_update()
                            .execution_options(populate_existing=True)).one()
            changed, refused, meaningful = [], [], []
            wanted = sorted(set(uids))
            rows = [e for chunk in range(0, len(wanted), 500) for e in s.scalars(select(m.MailboxEntry).where(
                m.MailboxEntry.mailbox_id == mailbox_id, m.MailboxEntry.uid.in_(wanted[chunk:chunk + 500]))
                .order_by(m.MailboxEntry.uid).execution_options(populate_existing=True))]
            for e in rows:
                if unchanged_since is not None and e.modseq > unchanged_since:
                    refused.append(e.uid)
                    continue
                new_sys = _apply(set(e.flags.split()), system, mode)
                new_kw = _apply(set(e.keywords.split()), keywords, mode)
                if new_sys == set(e.flags.split()) and new_kw == set(e.keywords.split()):
                    continue
                added = (new_sys - set(e.flags.split())) | {k.lower() for k in new_kw - set(e.keywords.split())}
                if added & _MEANINGFUL:
                    meaningful.append((e.message_id, {f if f.startswith("\\") else f.lower()
                                                      for f in added}))
                box.highestmodseq += 1
                e.flags, e.keywords, e.modseq = " ".join(sorted(new_sys)), " ".join(sorted(new_kw)), \
                    box.highestmodseq
                changed.append(EntryState(e.uid, e.modseq, _flags(e)))
            if meaningful:
                receipts.after_flags(self.store, s, box, meaningful, actor)
            return changed, refused
        return self.store._shared(unit)


# Flags whose addition matters beyond the mailbox (receipts): a read, handling started.
_MEANINGFUL = {"\\Seen", receipts.HANDLING_KEYWORD.lower()}

_E = m.MailboxEntry


# The values as the driver returns them: JSON as text, the date without the UTC conversion.
_FETCH_COLUMNS = (_E.uid, _E.modseq, _E.flags, _E.keywords, type_coerce(_E.internal_date, String),
                  m.Content.size, m.Content.sha256, m.Content.header_size, cast(m.Content.envelope, Text),
                  cast(m.Content.body, Text))


def _uid_runs(s: Session, mailbox_id: int, uidnext: int) -> list[tuple[int, int]]:
    """The mailbox's UIDs below `uidnext` as runs.  Every UID below UIDNEXT was given to one
    entry, and an expunged entry leaves a tombstone (`expunged`), so when the entries and
    the tombstones below UIDNEXT add up to UIDNEXT - 1, the UIDs are 1..UIDNEXT-1 without
    the tombstones: a count and the (usually few) tombstones instead of every entry.  The
    counts also hold across statements that see different commits (PostgreSQL's READ
    COMMITTED): an expunge between them moves one from the one count to the other, which
    shows as a mismatch, and then the entries' UIDs are read."""
    below = (_E.mailbox_id == mailbox_id, _E.uid < uidnext)
    live = s.scalar(select(func.count()).select_from(_E).where(*below)) or 0
    if not live:
        return []
    gone_below = (m.Expunged.mailbox_id == mailbox_id, m.Expunged.uid < uidnext)
    if (s.scalar(select(func.count()).select_from(m.Expunged).where(*gone_below)) or 0) <= live:
        holes = list(s.scalars(select(m.Expunged.uid).where(*gone_below).order_by(m.Expunged.uid)))
        if live + len(holes) == uidnext - 1:
            return complement(holes, 1, uidnext - 1)
    return runs_of(s.scalars(select(_E.uid).where(*below).order_by(_E.uid)))


def _keywords(s: Session, mailbox_id: int) -> list[str]:
    """The keywords set on the mailbox's messages (the partial index on entries that have
    keywords, ix_mailbox_entries_keywords, keeps this cheap: most entries have none)."""
    rows = s.scalars(select(_E.keywords).distinct().where(_E.mailbox_id == mailbox_id,
                                                          _E.keywords != literal_column("''")))
    return sorted({k for row in rows for k in row.split()})


def runs_of(uids: Iterable[int]) -> list[tuple[int, int]]:
    """(first, last) runs of consecutive values, for ascending `uids`."""
    out: list[tuple[int, int]] = []
    for uid in uids:
        if out and uid == out[-1][1] + 1:
            out[-1] = (out[-1][0], uid)
        else:
            out.append((uid, uid))
    return out


def complement(holes: Iterable[int], first: int, last: int) -> list[tuple[int, int]]:
    """The runs of first..last without the ascending values `holes`."""
    out: list[tuple[int, int]] = []
    start = first
    for hole in holes:
        if hole < start or hole > last:
            continue
        if hole > start:
            out.append((start, hole - 1))
        start = hole + 1
    if start <= last:
        out.append((start, last))
    return out


def _apply(current: set[str], given: set[str], mode: str) -> set[str]:
    if mode == "+":
        return current | given
    if mode == "-":
        return current - given
    return set(given)


def _view(box: m.Mailbox, name: str, shared: bool) -> MailboxView:
    return MailboxView(box.id, name, box.special_use, box.uidvalidity, box.uidnext, box.highestmodseq,
                       box.subscribed or shared, shared)


class Refused(Exception):
    """A mailbox change that cannot be done.  `reason` is one of "nonexistent", "exists",
    "cannot" (INBOX, special-use, Receipts, into itself), "haschildren", "noperm"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _own(s: Session, account_id: int, name: str) -> m.Mailbox:
    box = s.scalar(select(m.Mailbox).where(m.Mailbox.account_id == account_id, m.Mailbox.name == name)
                   .with_for_update())
    if box is None:
        raise Refused("nonexistent")
    return box


def _new_mailbox(s: Session, account_id: int, name: str, now: dt.datetime) -> m.Mailbox:
    # A fresh random UIDVALIDITY: a mailbox deleted and created again under the same name
    # gets a different one (RFC 9051 section 2.3.1.1).
    box = m.Mailbox(account_id=account_id, name=name, special_use=None,
                    uidvalidity=secrets.randbelow(2**31 - 2) + 1, uidnext=1, highestmodseq=1,
                    subscribed=True, created_at=now)
    s.add(box)
    s.flush()
    return box


__all__ = ["MailboxRepository", "MailboxView", "EntryState", "EntryData", "Refused", "SYSTEM_FLAGS", "runs_of",
           "complement"]

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
import secrets
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.core import mailboxnames as names
from bridge.store import models as m

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
    uid: int
    modseq: int
    flags: tuple[str, ...]
    internal_date: dt.datetime
    size: int
    sha256: str
    header_size: int
    envelope: list[Any]
    body: dict[str, Any]


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

    def state(self, mailbox_id: int) -> tuple[MailboxView | None, list[EntryState]]:
        """The mailbox's current counters and all its entries in UID order (SELECT)."""
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None:
                return None, []
            rows = s.execute(select(m.MailboxEntry.uid, m.MailboxEntry.modseq, m.MailboxEntry.flags,
                                    m.MailboxEntry.keywords).where(
                m.MailboxEntry.mailbox_id == mailbox_id).order_by(m.MailboxEntry.uid))
            entries = [EntryState(uid, modseq, _flag_tuple(flags, keywords))
                       for uid, modseq, flags, keywords in rows]
            return _view(box, box.name, shared=box.contact_point_id is not None), entries

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
        """FETCH data for the given UIDs (those that still exist), in UID order."""
        uid_list = sorted(set(uids))
        out: list[EntryData] = []
        with self.store.ro() as s:
            for chunk in range(0, len(uid_list), 500):
                part = uid_list[chunk:chunk + 500]
                rows = s.execute(select(m.MailboxEntry, m.Content).join(
                    m.Content, m.Content.sha256 == m.MailboxEntry.sha256).where(
                    m.MailboxEntry.mailbox_id == mailbox_id, m.MailboxEntry.uid.in_(part))
                    .order_by(m.MailboxEntry.uid))
                out += [EntryData(e.uid, e.modseq, _flags(e), e.internal_date, c.size, c.sha256,
                                  c.header_size, c.envelope, c.body) for e, c in rows]
        return out

    # --- flags -----------------------------------------------------------------------

    def store_flags(self, mailbox_id: int, uids: list[int], mode: str, flags: list[str],
                    unchanged_since: int | None = None) -> tuple[list[EntryState], list[int]]:
        """Set (mode "="), add ("+") or remove ("-") flags.  Returns (changed entries with
        their new MODSEQ, UIDs refused because they changed after `unchanged_since`)."""
        system = {f for f in flags if f.startswith("\\")}
        keywords = {f for f in flags if not f.startswith("\\")}

        def unit(s: Session) -> tuple[list[EntryState], list[int]]:
            # populate_existing: units sharing the session may have changed rows with Core statements.
            box = s.scalars(select(m.Mailbox).where(m.Mailbox.id == mailbox_id).with_for_update()
                            .execution_options(populate_existing=True)).one()
            changed, refused = [], []
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
                box.highestmodseq += 1
                e.flags, e.keywords, e.modseq = " ".join(sorted(new_sys)), " ".join(sorted(new_kw)), \
                    box.highestmodseq
                changed.append(EntryState(e.uid, e.modseq, _flags(e)))
            return changed, refused
        return self.store._shared(unit)


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


__all__ = ["MailboxRepository", "MailboxView", "EntryState", "EntryData", "Refused", "SYSTEM_FLAGS"]

"""Mailboxes as an IMAP session sees them: names, state, entries, flags.

Every method takes the account id and resolves mailboxes only among those the
account may see: its own, and the mailboxes of contact points it is granted,
shown under `Shared/<contact point>/` (DESIGN.md section 6).  A name that does
not resolve for this account is simply unknown (None), whether or not it
exists for someone else.  Returns plain value objects; no ORM objects leave.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.store import models as m

SHARED_PREFIX = "Shared"
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
    return tuple(f for f in (entry.flags.split() + entry.keywords.split()) if f)


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
        """The mailbox this account calls `name` ("INBOX" in any case), or None."""
        wanted = "INBOX" if name.upper() == "INBOX" else name
        return next((b for b in self.mailboxes(account_id) if b.name == wanted), None)

    def state(self, mailbox_id: int) -> tuple[MailboxView | None, list[EntryState]]:
        """The mailbox's current counters and all its entries in UID order (SELECT)."""
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None:
                return None, []
            rows = s.execute(select(m.MailboxEntry.uid, m.MailboxEntry.modseq, m.MailboxEntry.flags,
                                    m.MailboxEntry.keywords).where(
                m.MailboxEntry.mailbox_id == mailbox_id).order_by(m.MailboxEntry.uid))
            entries = [EntryState(uid, modseq, _flags(_Row(flags, keywords)))
                       for uid, modseq, flags, keywords in rows]
            return _view(box, box.name, shared=box.contact_point_id is not None), entries

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
            box = s.scalars(select(m.Mailbox).where(m.Mailbox.id == mailbox_id).with_for_update()).one()
            changed, refused = [], []
            for e in s.scalars(select(m.MailboxEntry).where(
                    m.MailboxEntry.mailbox_id == mailbox_id, m.MailboxEntry.uid.in_(uids))
                    .order_by(m.MailboxEntry.uid)):
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


class _Row:
    def __init__(self, flags: str, keywords: str) -> None:
        self.flags, self.keywords = flags, keywords


def _apply(current: set[str], given: set[str], mode: str) -> set[str]:
    if mode == "+":
        return current | given
    if mode == "-":
        return current - given
    return set(given)


def _view(box: m.Mailbox, name: str, shared: bool) -> MailboxView:
    return MailboxView(box.id, name, box.special_use, box.uidvalidity, box.uidnext, box.highestmodseq,
                       box.subscribed, shared)


__all__ = ["MailboxRepository", "MailboxView", "EntryState", "EntryData", "SYSTEM_FLAGS", "update"]

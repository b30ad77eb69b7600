"""Writes to mailbox entries for IMAP: expunge, copy, move and append.

Every method takes mailbox ids the caller has already resolved for the account
(MailboxRepository.find), runs as one unit in the store's shared transaction
(group commit, `SqlStore._shared`), and returns plain values.

MODSEQ rules (RFC 7162): each operation raises the mailbox's HIGHESTMODSEQ by
one and gives that value to every entry it creates, and to every UID it
expunges; an expunged UID is kept in `expunged` with that MODSEQ, so QRESYNC
can answer VANISHED for clients that last saw an older state.  Used by
imapserver/store_cmds.py; imports nothing from imapserver.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.core.messages import Filed
from bridge.store import models as m, receipts


@dataclass(frozen=True)
class Expunged:
    uids: list[int]
    highestmodseq: int


@dataclass(frozen=True)
class Copied:
    uidvalidity: int                 # of the target mailbox
    source_uids: list[int]           # ascending; source_uids[i] became target_uids[i]
    target_uids: list[int]
    filed: list[Filed]               # for IDLE sessions on the target


@dataclass(frozen=True)
class Appended:
    uidvalidity: int
    uid: int
    existed: bool                    # the bridge's own Sent copy of this message, not stored again
    filed: Filed | None


@dataclass(frozen=True)
class NewMessage:
    """What APPEND knows about the message it stores (analysed by bridge.core.mimeinfo)."""

    tenant_id: int
    account_id: int
    party_id: int
    from_address: str                # the appending account: it is the message's "sender"
    message_id: str                  # "" when the message has none
    in_reply_to: str | None
    references: list[str]
    subject: str | None
    sha256: str
    size: int
    info: Any                        # MessageInfo, for the contents row
    flags: list[str]
    internal_date: dt.datetime
    session_id: str | None


class EntryWriter:
    """See the module docstring."""

    def __init__(self, store: Any) -> None:
        self.store = store

    # --- expunge ------------------------------------------------------------------

    def expunge(self, mailbox_id: int, uids: list[int] | None = None) -> Expunged:
        """Remove the entries flagged \\Deleted (only those among `uids` when given)."""
        def unit(s: Session) -> Expunged:
            box = _lock(s, mailbox_id)
            # Only the flags column: "\\Deleted" is a system flag, kept in `flags`.
            q = select(m.MailboxEntry.uid, m.MailboxEntry.flags).where(
                m.MailboxEntry.mailbox_id == mailbox_id, m.MailboxEntry.flags.contains("\\Deleted"))
            wanted = None if uids is None else set(uids)
            doomed = [uid for uid, flags in s.execute(q) if "\\Deleted" in flags.split()
                      and (wanted is None or uid in wanted)]
            if doomed:
                _remove(s, box, sorted(doomed))
            return Expunged(sorted(doomed), box.highestmodseq)
        return self.store._shared(unit)

    # --- copy and move ------------------------------------------------------------

    def copy(self, source_id: int, uids: list[int], target_id: int, move: bool = False,
             actor: int | None = None) -> Copied:
        """Copy (or move) the given entries into the target mailbox with their flags,
        keywords and internal dates, under new UIDs in ascending order.  Staff (`actor`)
        moving a message out of a contact point's INBOX (not to Trash) is handling
        started, recorded in the same transaction (store/receipts.py)."""
        def unit(s: Session) -> Copied:
            boxes = {b.id: b for b in s.scalars(select(m.Mailbox).where(
                m.Mailbox.id.in_({source_id, target_id})).order_by(m.Mailbox.id).with_for_update()
                .execution_options(populate_existing=True))}
            source, target = boxes[source_id], boxes[target_id]
            wanted = sorted(set(uids))
            rows = []
            for chunk in range(0, len(wanted), 500):
                rows += s.execute(select(m.MailboxEntry, m.Message.uuid).join(
                    m.Message, m.Message.id == m.MailboxEntry.message_id).where(
                    m.MailboxEntry.mailbox_id == source_id,
                    m.MailboxEntry.uid.in_(wanted[chunk:chunk + 500]))
                    .order_by(m.MailboxEntry.uid).execution_options(populate_existing=True)).all()
            if not rows:
                return Copied(target.uidvalidity, [], [], [])
            target.highestmodseq += 1
            modseq = target.highestmodseq
            src, dst, filed = [], [], []
            for e, message_uuid in rows:
                uid = target.uidnext
                target.uidnext += 1
                s.add(m.MailboxEntry(mailbox_id=target_id, uid=uid, message_id=e.message_id,
                                     sha256=e.sha256, flags=e.flags, keywords=e.keywords,
                                     modseq=modseq, internal_date=e.internal_date))
                src.append(e.uid)
                dst.append(uid)
                filed.append(Filed(target_id, uid, modseq, message_uuid))
            if move:
                s.flush()
                _remove(s, source, src)
                if source.contact_point_id is not None and source.name == "INBOX" and \
                        target.special_use != "\\Trash":
                    for e, _ in rows:
                        receipts.handling(self.store, s, source.contact_point_id, e.message_id, actor, "move")
            return Copied(target.uidvalidity, src, dst, filed)
        return self.store._shared(unit)

    # --- append -------------------------------------------------------------------

    def sent_copy(self, mailbox_id: int, account_id: int, message_id: str) -> tuple[int, int] | None:
        """(uidvalidity, uid) of the bridge's own copy of the account's submission
        `message_id` in its Sent mailbox `mailbox_id`, if it is there (a cheap look
        before APPEND stores a blob)."""
        if not message_id:
            return None
        with self.store.ro() as s:
            box = s.get(m.Mailbox, mailbox_id)
            if box is None or not _is_own_sent(box, account_id):
                return None
            uid = _sent_entry(s, box.id, account_id, message_id)
            return None if uid is None else (box.uidvalidity, uid)

    def append(self, mailbox_id: int, msg: NewMessage) -> Appended:
        """Record the appended message (blob already stored) and file it in the mailbox.

        An APPEND to the account's own Sent of a message the account submitted through
        the bridge (same Message-ID) is the client's copy of what the bridge files
        there itself (DESIGN.md section 4.3): it is answered with the bridge's entry,
        filing that now if the delivery worker has not yet, and not stored twice."""
        def unit(s: Session) -> Appended:
            box = _lock(s, mailbox_id)
            if msg.message_id and _is_own_sent(box, msg.account_id):
                known = self._own_sent(s, box, msg)
                if known is not None:
                    return known
            thread = _thread_of(s, ([msg.in_reply_to] if msg.in_reply_to else []) + msg.references)
            self._content(s, msg.sha256, msg.info)
            row = m.Message(uuid=str(uuid.uuid4()), tenant_id=msg.tenant_id, message_id=msg.message_id,
                            thread_id=thread or str(uuid.uuid4()), in_reply_to=msg.in_reply_to,
                            sender_account_id=msg.account_id, sender_party_id=msg.party_id,
                            from_address=msg.from_address, subject=msg.subject, sha256=msg.sha256,
                            size=msg.size, internal_date=msg.internal_date, origin="imap-append",
                            session_id=msg.session_id, state="delivered")
            s.add(row)
            s.flush()
            uid, modseq = _file(s, box, row.id, msg.sha256, msg.flags, msg.internal_date)
            return Appended(box.uidvalidity, uid, False, Filed(box.id, uid, modseq, row.uuid))
        return self.store._shared(unit)

    def _own_sent(self, s: Session, box: m.Mailbox, msg: NewMessage) -> Appended | None:
        uid = _sent_entry(s, box.id, msg.account_id, msg.message_id)
        if uid is not None:
            return Appended(box.uidvalidity, uid, True, None)
        # Not filed yet: take over the pending "sent" delivery job and file its copy now.
        pending = s.execute(select(m.DeliveryJob.id, m.Message.id, m.Message.sha256, m.Message.uuid).join(
            m.Message, m.Message.id == m.DeliveryJob.message_id).where(
            m.DeliveryJob.kind == "sent", m.DeliveryJob.account_id == msg.account_id,
            m.DeliveryJob.state.in_(("queued", "running")), m.Message.message_id == msg.message_id,
            m.Message.sender_account_id == msg.account_id, m.Message.origin != "imap-append")
            .order_by(m.DeliveryJob.id).limit(1)).first()
        if pending is None:
            return None
        job_id, message_pk, sha256, message_uuid = pending
        taken = s.execute(update(m.DeliveryJob).where(
            m.DeliveryJob.id == job_id, m.DeliveryJob.state.in_(("queued", "running"))).values(
            state="done", done_at=self.store.clock.now(), lease_until=None))
        if taken.rowcount != 1:
            return None
        flags = sorted(set(msg.flags) | {"\\Seen"})
        uid, modseq = _file(s, box, message_pk, sha256, flags, self.store.clock.now())
        s.execute(select(m.Message.id).where(m.Message.id == message_pk).with_for_update())
        pending = s.scalar(select(func.count()).select_from(m.DeliveryJob).where(
            m.DeliveryJob.message_id == message_pk, m.DeliveryJob.state.in_(("queued", "running"))))
        if not pending:
            s.execute(update(m.Message).where(m.Message.id == message_pk, m.Message.state == "accepted")
                      .values(state="delivered"))
        self.store._audit(s, self._delivered_event(s, message_pk, message_uuid, msg))   # last: lock order
        return Appended(box.uidvalidity, uid, True, Filed(box.id, uid, modseq, message_uuid))

    def _delivered_event(self, s: Session, message_pk: int, message_uuid: str, msg: NewMessage) -> AuditEvent:
        """The "delivered" event of the Sent copy filed for the client's APPEND: what the
        delivery worker would have written (core/delivery.py `_event`), with the IMAP
        session as the actor."""
        chain = s.scalar(select(m.Tenant.name).join(m.Message, m.Message.tenant_id == m.Tenant.id)
                         .where(m.Message.id == message_pk))
        owner_chain = s.scalar(select(m.Tenant.name).join(m.Account, m.Account.tenant_id == m.Tenant.id)
                               .where(m.Account.id == msg.account_id))
        return AuditEvent(time=self.store.clock.now(), chain=chain, kind="delivered", result="ok",
                          actor=msg.from_address, subject=msg.from_address, message_uuid=message_uuid,
                          protocol="imap", session_id=msg.session_id,
                          details={"mailbox": "Sent", "recipient_chain": owner_chain, "via": "append"})

    def _content(self, s: Session, sha256: str, info: Any) -> None:
        """The content row of a blob unless it exists: INSERT ... ON CONFLICT DO NOTHING."""
        insert = sqlite_insert if self.store.is_sqlite else pg_insert
        s.execute(insert(m.Content).values(
            sha256=sha256, size=info.size, header_size=info.header_size, subject=info.subject,
            envelope=info.envelope, body=info.body, created_at=self.store.clock.now(),
        ).on_conflict_do_nothing(index_elements=["sha256"]))


def _lock(s: Session, mailbox_id: int) -> m.Mailbox:
    # populate_existing: units sharing the session may have changed the row with Core statements.
    return s.scalars(select(m.Mailbox).where(m.Mailbox.id == mailbox_id).with_for_update()
                     .execution_options(populate_existing=True)).one()


def _thread_of(s: Session, message_ids: list[str]) -> str | None:
    if not message_ids:
        return None
    return s.scalar(select(m.Message.thread_id).where(m.Message.message_id.in_(message_ids[:100]))
                    .order_by(m.Message.id).limit(1))


def _remove(s: Session, box: m.Mailbox, uids: list[int]) -> None:
    """Delete the entries and remember each UID with the MODSEQ of its expunge."""
    box.highestmodseq += 1
    for chunk in range(0, len(uids), 500):
        part = uids[chunk:chunk + 500]
        s.execute(delete(m.MailboxEntry).where(m.MailboxEntry.mailbox_id == box.id,
                                               m.MailboxEntry.uid.in_(part)))
    s.add_all([m.Expunged(mailbox_id=box.id, uid=uid, modseq=box.highestmodseq) for uid in uids])


def _file(s: Session, box: m.Mailbox, message_pk: int, sha256: str, flags: list[str],
          internal_date: dt.datetime) -> tuple[int, int]:
    uid, modseq = box.uidnext, box.highestmodseq + 1
    box.uidnext, box.highestmodseq = uid + 1, modseq
    system = sorted({f for f in flags if f.startswith("\\")})
    keywords = sorted({f for f in flags if not f.startswith("\\")})
    s.add(m.MailboxEntry(mailbox_id=box.id, uid=uid, message_id=message_pk, sha256=sha256,
                         flags=" ".join(system), keywords=" ".join(keywords), modseq=modseq,
                         internal_date=internal_date))
    return uid, modseq


def _is_own_sent(box: m.Mailbox, account_id: int) -> bool:
    return box.account_id == account_id and box.special_use == "\\Sent"


def _sent_entry(s: Session, mailbox_id: int, account_id: int, message_id: str) -> int | None:
    return s.scalar(select(m.MailboxEntry.uid).join(
        m.Message, m.Message.id == m.MailboxEntry.message_id).where(
        m.MailboxEntry.mailbox_id == mailbox_id, m.Message.message_id == message_id,
        m.Message.sender_account_id == account_id, m.Message.origin != "imap-append")
        .order_by(m.MailboxEntry.uid).limit(1))


__all__ = ["EntryWriter", "NewMessage", "Appended", "Copied", "Expunged"]

"""The SQL store: one implementation for SQLite (embedded default) and PostgreSQL.

`SqlStore` owns engines, transactions and every query.  Returns core value
objects (or plain dicts for admin listings); never returns ORM objects to
callers.  It is composed of parts, one module each, all on `StoreBase`:

  engine.py       engines, transactions, group commit, the hot-statement cursor
  prepared.py     the hot statements, compiled once per engine
  auditchain.py   appending to the audit trail in the caller's transaction
  directory.py    tenants, accounts, app passwords, contact points, grants (admin)
  identities.py   credentials, principals, recipient resolution (per login, per RCPT)
  submissions.py  accepting a message: message, jobs, audit events, owed receipts
  delivery.py     claiming, filing and failing delivery jobs

The repositories for IMAP, receipts, tokens and certificates (mailboxes.py,
entries.py, receipts.py, tokens.py, certificates.py, ...) take a `SqlStore` and
use its transactions and `_audit`.
"""

from __future__ import annotations

from sqlalchemy import select

from bridge.errors import NotFound
from bridge.store import models as m
from bridge.store.delivery import DeliveryMixin
from bridge.store.directory import DirectoryMixin
from bridge.store.engine import make_engine, row_dict
from bridge.store.identities import IdentitiesMixin
from bridge.store.submissions import SubmissionsMixin

__all__ = ["SqlStore", "make_engine"]


class SqlStore(DirectoryMixin, IdentitiesMixin, SubmissionsMixin, DeliveryMixin):
    """The store every front end, worker and admin command is given (see the module docstring)."""

    def read_by_mdn(self, reader_id: int, original_message_id: str) -> str | None:
        from bridge.store.receipts import read_by_mdn
        return read_by_mdn(self, reader_id, original_message_id)

    def message_ids_by_uuid(self, uuids: list[str], scopes: list[tuple[int, int | None]]) -> dict[str, str]:
        """UUID -> Message-ID of stored messages within `scopes` (store/memoviews.py)."""
        from bridge.store.memoviews import message_ids_by_uuid
        return message_ids_by_uuid(self, uuids, scopes)

    # --- reading mailboxes (tests, trace; IMAP builds on this) -----------------------

    def mailbox_entries(self, owner: str, mailbox: str = "INBOX") -> list[dict]:
        """Entries in the mailbox `mailbox` of the account or contact point `owner`."""
        with self.ro() as s:
            a = s.scalar(select(m.Account).where(m.Account.login == owner.lower()))
            cond = m.Mailbox.account_id == a.id if a else m.Mailbox.contact_point_id == \
                self._get_contact_point(s, owner).id
            box = s.scalar(select(m.Mailbox).where(cond, m.Mailbox.name == mailbox))
            if box is None:
                raise NotFound(f"{owner} has no mailbox {mailbox!r}")
            rows = s.execute(select(m.MailboxEntry, m.Message).join(
                m.Message, m.Message.id == m.MailboxEntry.message_id).where(
                m.MailboxEntry.mailbox_id == box.id).order_by(m.MailboxEntry.uid))
            return [{"uid": e.uid, "modseq": e.modseq, "sha256": e.sha256, "flags": e.flags,
                     "message_uuid": msg.uuid, "message_id": msg.message_id, "thread_id": msg.thread_id,
                     "accepted_sha256": msg.sha256, "from_address": msg.from_address}
                    for e, msg in rows]

    def message(self, message_uuid: str) -> dict | None:
        with self.ro() as s:
            msg = s.scalar(select(m.Message).where(m.Message.uuid == message_uuid))
            return row_dict(msg) if msg else None

"""Accepting a submission: the message, its delivery jobs, audit events and owed receipts at once.

`accept` runs as one unit of the shared transaction (group commit): a duplicate
check (same account, same Message-ID since `dedup_since`), the thread lookup,
then the content row, the message, one delivery job per recipient plus the Sent
copy's (or notification rows), the audit events and the receipts owed.  The
per-message statements are prepared ones (prepared.py) run on the cursor; the
jobs are filed by delivery.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.core.identities import Target
from bridge.core.messages import Submission
from bridge.store import models as m
from bridge.store.auditchain import AuditChainMixin

_MSG = m.Message.__table__

_THREAD_OF = select(_MSG.c.thread_id).where(
    _MSG.c.message_id.in_(bindparam("ids", expanding=True))).order_by(_MSG.c.id).limit(1)


class SubmissionsMixin(AuditChainMixin):
    """The accept path of `SqlStore`."""

    def accept(self, sub: Submission, targets: list[Target], recipients: list[str],
               audit: AuditEvent, info: Any, *, dedup_since: dt.datetime | None = None,
               references: list[str] | None = None, submitted: AuditEvent | None = None,
               refused: list[tuple[str, str, str]] = (), hold_until: dt.datetime | None = None,
               notify: tuple[str, str] | None = None) -> tuple[str, bool]:
        """The message, its delivery jobs, its audit events (`submitted`, then `audit`) and the
        receipts owed for them (SubmissionAcceptance; SubmissionRejection for each of `refused`,
        the (address, status, reason) of recipients refused in the same transaction), in ONE
        transaction (shared with concurrent acceptances, committed before this returns).  The
        recipients' jobs are not due before `hold_until`, if given (the Sent copy is).  With
        `notify` (channel, text) the recipients get a notification row instead of a mailbox copy.
        Returns (uuid, duplicate):
        when the same account submitted the same Message-ID since `dedup_since`, nothing is
        stored and the first acceptance's UUID is returned.  The thread is that of the first
        known message among `references`, else sub.thread_id.  `info` (the blob's
        MessageInfo) is kept as the content row of the accepted blob."""
        def unit(s: Session) -> tuple[str, bool]:
            s.flush()           # statements on the cursor below: whatever the ORM holds goes first
            earlier = self._duplicate(s, sub, dedup_since)
            if earlier:
                return earlier, True
            thread = self._thread_of(s, references or [])
            self._accept(s, replace(sub, thread_id=thread) if thread else sub, targets, recipients,
                         audit, info, submitted, refused, hold_until, notify)
            return sub.uuid, False
        return self._shared(unit)

    def _duplicate(self, s: Session, sub: Submission, since: dt.datetime | None) -> str | None:
        if since is None or not sub.message_id:
            return None
        row = self._run(s, self._q.duplicate, {"sender": sub.sender_account_id, "mid": sub.message_id,
                                                "since": since}).fetchone()
        return row[0] if row else None

    def _thread_of(self, s: Session, message_ids: list[str]) -> str | None:
        if not message_ids:
            return None
        return s.connection().execute(_THREAD_OF, {"ids": message_ids[:100]}).scalar()

    def _accept(self, s: Session, sub: Submission, targets: list[Target], recipients: list[str],
                audit: AuditEvent, info: Any, submitted: AuditEvent | None = None,
                refused: Any = (), hold_until: dt.datetime | None = None,
                notify: tuple[str, str] | None = None) -> None:
        now = self.clock.now()
        q = self._q
        self._content(s, sub.sha256, info)
        cur = self._run(s, q.insert_message, {
            "uuid": sub.uuid, "tenant_id": sub.tenant_id, "message_id": sub.message_id,
            "thread_id": sub.thread_id, "in_reply_to": sub.in_reply_to,
            "sender_account_id": sub.sender_account_id, "sender_party_id": sub.sender_party_id,
            "from_address": sub.from_address, "subject": sub.subject, "sha256": sub.sha256,
            "size": sub.size, "internal_date": sub.internal_date, "origin": sub.origin,
            "session_id": sub.session_id, "state": "accepted", "memo": sub.memo, "auth": sub.auth})
        message_pk = cur.lastrowid if q.sqlite else cur.fetchone()[0]
        jobs = [_job_row(message_pk, "inbox", rcpt, target.id if target.kind == "account" else None,
                         target.id if target.kind == "contact_point" else None, now, hold_until)
                for target, rcpt in zip(targets, recipients)] if notify is None else []
        jobs.append(_job_row(message_pk, "sent", sub.from_address, sub.sender_account_id, None, now))
        self._run_many(s, q.insert_jobs, jobs)
        from bridge.store.receipts import owe
        if notify is not None:
            channel, text = notify
            for rcpt in recipients:
                s.execute(insert(m.Notification).values(
                    tenant_id=sub.tenant_id, message_id=message_pk, channel=channel, recipient=rcpt,
                    text=text, state="queued", created_at=now))
        if submitted is not None:
            self._audit(s, submitted)
        ref = self._audit_ref(s, audit)
        owe(self, s, message_pk=message_pk, event="SubmissionAcceptance", ref=ref,
            owner_account_id=sub.sender_account_id)
        for address, status, reason in refused:
            ref = self._audit_ref(s, replace(audit, kind="recipient.refused", result="refused",
                                             subject=address[:320],
                                             details={"status": status, "reason": reason}))
            owe(self, s, message_pk=message_pk, event="SubmissionRejection", ref=ref, recipient=address,
                owner_account_id=sub.sender_account_id, details={"status": status, "reason": reason})


def _job_row(message_pk: int, kind: str, recipient: str, account_id: int | None,
             contact_point_id: int | None, now: dt.datetime, due: dt.datetime | None = None) -> dict[str, Any]:
    return {"message_id": message_pk, "kind": kind, "recipient": recipient, "account_id": account_id,
            "contact_point_id": contact_point_id, "state": "queued", "attempts": 0,
            "next_attempt_at": due or now, "created_at": now}

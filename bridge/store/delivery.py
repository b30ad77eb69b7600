"""Delivery jobs: claimed under a lease, filed into the owner's INBOX or Sent, failed, released.

PostgreSQL claims jobs with FOR UPDATE SKIP LOCKED so several nodes can share
one database (DESIGN.md section 11); every write checks the job's lease token,
so a job whose lease ran out and was taken by another worker is filed once.
Claims and filings are units of the shared transaction (group commit); their
per-message statements are prepared ones (prepared.py) run on the cursor.
Lock order within a transaction: delivery job, content, mailbox, message,
audit head.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.core.messages import Filed, Job
from bridge.store import models as m
from bridge.store.auditchain import AuditChainMixin


class DeliveryMixin(AuditChainMixin):
    """Delivery job claiming and filing of `SqlStore`."""

    def claim_jobs(self, limit: int, lease_seconds: float) -> list[Job]:
        """Lease up to `limit` jobs that are due (or whose lease ran out) for `lease_seconds`.
        The claim shares a commit with concurrent acceptances and filings: on SQLite it then
        never waits for the write lock behind them, and it saves a commit of its own."""
        now = self.clock.now()
        token = str(uuid.uuid4())

        def unit(s: Session) -> list[Job]:
            s.flush()
            q = self._q
            claimed = self._run(s, q.claim, {"now": now, "limit": limit, "token": token,
                                             "until": now + dt.timedelta(seconds=lease_seconds)})
            if claimed.rowcount == 0:
                return []
            return [_job_view(row) for row in self._run(s, q.claimed, {"token": token}).fetchall()]
        return self._shared(unit)

    def file(self, job: Job, sha256: str, info: Any, audit: AuditEvent) -> Filed | None:
        """File the job's copy (`sha256`, analysed as `info`) into the owner's INBOX or Sent,
        mark the job done and record the audit event, in one transaction (shared with
        concurrent filings).  None when the job is no longer ours (its lease expired and
        another worker took it)."""
        return self._shared(lambda s: self._file(s, job, sha256, info, audit))

    def file_many(self, items: list[tuple[Job, str, Any, AuditEvent]]) -> list[Filed | None]:
        """`file` for several jobs, in one unit of a shared transaction: all are filed or
        (on an exception) none is."""
        # A message is delivered when its last pending job is filed.  While a later job of the
        # same message waits in `items` (claimed, so pending), that check cannot succeed for
        # an earlier one, so it is left to the last one; or made when the last one turns out
        # not to be ours any more (its lease ran out and another worker took it).
        last = {job.message_pk: i for i, (job, *_) in enumerate(items)}

        def unit(s: Session) -> list[Filed | None]:
            out: list[Filed | None] = []
            owed: set[int] = set()
            for i, (job, sha256, info, audit) in enumerate(items):
                is_last = last[job.message_pk] == i
                filed = self._file(s, job, sha256, info, audit, check_delivered=is_last)
                if filed is not None and not is_last:
                    owed.add(job.message_pk)
                elif filed is None and is_last and job.message_pk in owed:
                    self._mark_delivered(s, job.message_pk)
                out.append(filed)
            return out
        return self._shared(unit)

    def _file(self, s: Session, job: Job, sha256: str, info: Any, audit: AuditEvent,
              check_delivered: bool = True) -> Filed | None:
        s.flush()               # statements on the cursor below: whatever the ORM holds goes first
        q = self._q
        now = self.clock.now()
        done = self._run(s, q.finish_job, {"job_id": job.id, "token": job.lease_token, "now": now})
        if done.rowcount != 1:
            return None
        self._content(s, sha256, info)
        owner = "account_id" if job.owner_kind == "account" else "contact_point_id"
        box_id, uid, modseq = self._take_uid(s, owner, job.owner_id, "Sent" if job.kind == "sent" else "INBOX")
        self._run(s, q.insert_entry, {
            "mailbox_id": box_id, "uid": uid, "message_id": job.message_pk, "sha256": sha256,
            "flags": "\\Seen" if job.kind == "sent" else "",
            "keywords": "" if job.kind == "sent" else " ".join(job.keywords), "modseq": modseq,
            "internal_date": now})
        if check_delivered:
            self._mark_delivered(s, job.message_pk)
        if job.kind == "sent":
            self._audit(s, audit)
        else:
            from bridge.store.receipts import owe
            owe(self, s, message_pk=job.message_pk, event="ContentConsignment", ref=self._audit_ref(s, audit),
                recipient=job.recipient, details={"status": "2.0.0", "delivered_sha256": sha256,
                                                  "owner": job.owner_address})
        return Filed(box_id, uid, modseq, job.message_uuid)

    def _take_uid(self, s: Session, owner: str, owner_id: int, box_name: str) -> tuple[int, int, int]:
        """Take the next UID and MODSEQ of the mailbox `box_name` of an account ("account_id")
        or contact point ("contact_point_id"): (mailbox id, uid, modseq).  A missing Receipts
        mailbox (a user deleted it) is made again.  The mailbox row stays locked until
        commit, so concurrent filings queue up behind it."""
        q = self._q
        row = self._run(s, q.lock_box[owner], {"owner": owner_id, "box_name": box_name}).fetchone()
        if row is None and box_name == "Receipts" and owner == "account_id":
            s.add(m.Mailbox(account_id=owner_id, name="Receipts", special_use=None,
                            uidvalidity=secrets.randbelow(2**31 - 2) + 1, uidnext=1, highestmodseq=1,
                            subscribed=True, created_at=self.clock.now()))
            s.flush()
            row = self._run(s, q.lock_box[owner], {"owner": owner_id, "box_name": box_name}).fetchone()
        box_id, uid, modseq = row
        if not q.sqlite:
            return box_id, uid, modseq        # taken and written by the one statement
        self._run(s, q.set_box, {"box_id": box_id, "new_uidnext": uid + 1, "new_modseq": modseq + 1})
        return box_id, uid, modseq + 1

    def _mark_delivered(self, s: Session, message_pk: int) -> None:
        # Lock the message first: two jobs of one message filed at the same moment would
        # otherwise each still see the other as pending (READ COMMITTED on PostgreSQL).  The
        # UPDATE that follows is a new statement, so it sees what the lock waited for.  A
        # message with a job that failed for good stays "failed".  On SQLite the write
        # transaction already holds the database lock: there is nothing more to lock.
        q = self._q
        if not q.sqlite:
            self._run(s, q.lock_message, {"message_pk": message_pk})
        self._run(s, q.mark_delivered, {"message_pk": message_pk})

    def fail_job(self, job: Job, error: str, retry_at: dt.datetime | None, audit: AuditEvent,
                 status: str = "4.0.0") -> None:
        """Record a failed attempt: queued again for `retry_at`, or failed for good (None).
        Does nothing when the job is no longer ours (the lease expired and another worker
        took it, maybe filed it): its outcome is that worker's to record."""
        with self.tx() as s:
            values: dict[str, Any] = {"last_error": error[:2000], "lease_until": None}
            values.update(state="queued", next_attempt_at=retry_at) if retry_at else values.update(state="failed")
            ours = s.execute(update(m.DeliveryJob).where(
                m.DeliveryJob.id == job.id, m.DeliveryJob.state == "running",
                m.DeliveryJob.lease_token == job.lease_token).values(**values))
            if ours.rowcount != 1:
                return
            if retry_at is None:
                s.execute(update(m.Message).where(m.Message.id == job.message_pk).values(state="failed"))
            if retry_at is None and job.kind == "inbox":
                from bridge.store.receipts import owe
                owe(self, s, message_pk=job.message_pk, event="ContentConsignmentFailure",
                    ref=self._audit_ref(s, audit), recipient=job.recipient,
                    details={"status": status, "reason": audit.details.get("reason", ""),
                             "owner": job.owner_address})
            else:
                self._audit(s, audit)

    def release_leases(self) -> int:
        """Make every claimed job claimable again (at start-up).  Safe with several nodes:
        filing checks the lease token, so a job is still filed only once."""
        with self.tx() as s:
            return s.execute(update(m.DeliveryJob).where(m.DeliveryJob.state == "running").values(
                state="queued", lease_token=None, lease_until=None)).rowcount

    def pending_jobs(self) -> int:
        with self.ro() as s:
            return s.scalar(select(func.count()).select_from(m.DeliveryJob).where(
                m.DeliveryJob.state.in_(("queued", "running")))) or 0


def _job_view(row: Any) -> Job:
    (job_id, kind, recipient, token, attempts, account_id, message_pk, message_uuid, sha256, from_address,
     tenant_name, tenant_kind, sender_login, party_kind, party_ident,
     acct_id, acct_login, cp_id, cp_address, owner_chain, owner_tenant_kind, owner_disabled, auth, memo) = row
    memo = (json.loads(memo) if isinstance(memo, str) else memo) or {}
    if account_id:
        owner_kind, owner_id, owner_address = "account", acct_id, acct_login
    else:
        owner_kind, owner_id, owner_address = "contact_point", cp_id, cp_address
    return Job(id=job_id, kind=kind, recipient=recipient, lease_token=token, attempts=attempts,
               message_pk=message_pk, message_uuid=message_uuid, sha256=sha256, tenant_name=tenant_name,
               from_address=from_address, sender_login=sender_login,
               sender_party=f"{party_kind}:{party_ident}" if party_kind is not None else None,
               sender_tenant_kind=tenant_kind, owner_kind=owner_kind, owner_id=owner_id,
               owner_address=owner_address, owner_chain=owner_chain, owner_tenant_kind=owner_tenant_kind,
               owner_disabled=bool(owner_disabled),
               # a raw driver row: SQLite gives the JSON text, psycopg the decoded value
               auth=list((json.loads(auth) if isinstance(auth, str) else auth) or []),
               keywords=tuple(memo.get("keywords", ())))


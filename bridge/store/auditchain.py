"""Appending to the audit trail, in the caller's transaction (DESIGN.md section 5).

Every write of the store ends by appending its audit event (`_audit`) to the
event's chain (one chain per tenant): the chain's head row is locked until
commit, so appenders (threads or nodes) queue up behind it and every chain stays
a line of hash-linked events.  `_audit_ref` also says where the event sits, for
a receipt's evidence.  Reading the trail for the CLI is auditlog.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.core.audit import GENESIS, AuditEvent, link_hash
from bridge.store import models as m
from bridge.store.engine import HEADS, StoreBase, row_dict

if TYPE_CHECKING:
    from bridge.store.receipts import AuditRef


class AuditChainMixin(StoreBase):
    """The audit append of `SqlStore`; every other part of it builds on this one."""

    def _audit(self, s: Session, ev: AuditEvent) -> str:
        """Append `ev` to its chain in the caller's transaction.  The chain's head row is
        locked until commit, so concurrent appenders (threads or nodes) queue up behind it
        and every chain stays linear.  Call it last in a transaction (lock order:
        delivery job, content, mailbox, message, audit head).  A head locked once in a
        transaction stays locked until it ends, so it is read once per transaction (kept
        in `s.info`) however many events a shared commit appends to that chain."""
        heads = s.info.get(HEADS)
        if heads is None:
            heads = s.info[HEADS] = {}
        head = heads.get(ev.chain)
        if head is None:
            head = heads[ev.chain] = self._audit_head(s, ev.chain)
        seq, prev = head[0] + 1, head[1]
        digest = link_hash(prev, ev)
        q = self._q
        self._run(s, q.insert_event, {
            "chain": ev.chain, "seq": seq, "time": ev.time, "kind": ev.kind,
            "message_uuid": ev.message_uuid, "actor": ev.actor, "subject": ev.subject,
            "protocol": ev.protocol, "session_id": ev.session_id, "result": ev.result,
            "details": ev.details, "prev_hash": prev, "hash": digest})
        self._run(s, q.update_head, {"head_chain": ev.chain, "new_seq": seq, "new_hash": digest})
        head[0], head[1] = seq, digest
        return digest

    def _audit_ref(self, s: Session, ev: AuditEvent) -> "AuditRef":
        """`_audit`, returning where the event sits in its chain (for a receipt's evidence)."""
        from bridge.store.receipts import AuditRef
        digest = self._audit(s, ev)
        return AuditRef(ev.chain, s.info[HEADS][ev.chain][0], digest, ev.time)

    def _audit_head(self, s: Session, chain: str) -> list[Any]:
        """[seq, hash] of the chain's head, its row locked until the transaction ends."""
        q = self._q
        row = self._run(s, q.lock_head, {"head_chain": chain}).fetchone()
        if row is None:
            # A new chain; another transaction may be creating it at this moment: then the
            # insert waits for it and does nothing, and the row is locked below.
            self._run(s, q.new_head, {"chain": chain, "seq": 0, "hash": GENESIS})
            row = self._run(s, q.lock_head, {"head_chain": chain}).fetchone()
        return [row[0], row[1]]

    def append_audit(self, ev: AuditEvent) -> str:
        with self.tx() as s:
            return self._audit(s, ev)

    def audit_heads(self) -> dict[str, tuple[int, str]]:
        """The newest (seq, hash) of every chain, for `verify_chain(..., head=...)`."""
        with self.ro() as s:
            return {h.chain: (h.seq, h.hash) for h in s.scalars(select(m.AuditHead))}

    def audit_events(self, chain: str | None = None, message_uuid: str | None = None) -> list[dict]:
        q = select(m.AuditEvent).order_by(m.AuditEvent.chain, m.AuditEvent.seq)
        if chain:
            q = q.where(m.AuditEvent.chain == chain)
        if message_uuid:
            q = q.where(m.AuditEvent.message_uuid == message_uuid)
        with self.ro() as s:
            return [row_dict(e) for e in s.scalars(q)]

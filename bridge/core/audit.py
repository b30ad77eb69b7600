"""The audit trail's events and hash chain (DESIGN.md section 5).

One append-only chain per tenant ("_system" for events with no tenant, such as
a failed login for an unknown user): hash = SHA-256(prev_hash || canonical JSON
of the event).  This module defines the event and the hashing; the store
appends rows in the same transaction as the action they record.  Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64
SYSTEM_CHAIN = "_system"


@dataclass(frozen=True)
class AuditEvent:
    time: dt.datetime
    chain: str                      # tenant name or SYSTEM_CHAIN
    kind: str                       # e.g. "login", "submit.accepted", "submit.rejected", "delivered"
    result: str                     # ok | fail | refused
    actor: str | None = None        # login of who acted
    subject: str | None = None      # what it was done to (recipient, mailbox, account)
    message_uuid: str | None = None
    protocol: str | None = None     # smtp | imap | cli | worker
    session_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def canonical(self) -> bytes:
        """The bytes hashed into the chain: sorted keys, no whitespace, UTC ISO time."""
        doc = {
            "time": self.time.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
            "chain": self.chain, "kind": self.kind, "result": self.result, "actor": self.actor,
            "subject": self.subject, "message_uuid": self.message_uuid, "protocol": self.protocol,
            "session_id": self.session_id, "details": self.details,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + event.canonical()).hexdigest()


EVENT_FIELDS = ("time", "chain", "kind", "result", "actor", "subject", "message_uuid", "protocol",
                "session_id", "details")


def event_from_row(row: Mapping[str, Any]) -> AuditEvent:
    """The event a stored row records (a row has EVENT_FIELDS plus seq, prev_hash, hash).
    A naive time is UTC, as the store keeps it."""
    fields = {k: row[k] for k in EVENT_FIELDS}
    if fields["time"].tzinfo is None:
        fields["time"] = fields["time"].replace(tzinfo=dt.timezone.utc)
    fields["details"] = dict(fields["details"] or {})
    return AuditEvent(**fields)


def verify_chain(rows: Iterable[Mapping[str, Any]], head: tuple[int, str] | None = None) -> int | None:
    """Re-walk one chain's rows (in seq order); None if every link holds, else the seq of
    the first link that does not: a changed row, a missing or reordered seq (the seq that
    was expected), a row of another chain.  With `head` (the stored newest (seq, hash)),
    rows cut off at the end are found too (the first missing seq)."""
    prev, expected, chain = GENESIS, 1, None
    for row in rows:
        if row["seq"] != expected or row["prev_hash"] != prev:
            return expected
        chain = chain or row["chain"]
        if row["chain"] != chain or link_hash(prev, event_from_row(row)) != row["hash"]:
            return expected
        prev, expected = row["hash"], expected + 1
    if head is not None:
        last = expected - 1
        if head[0] > last:
            return expected                 # rows cut off at the end
        if head[0] < last:
            return head[0] + 1              # rows the head does not know
        if head[1] != prev:
            return last                     # the newest row is not the one the head recorded
    return None

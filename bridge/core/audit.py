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
from typing import Any

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

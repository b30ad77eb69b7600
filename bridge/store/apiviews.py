"""Read-only queries the HTTP API needs beyond auditlog's: the receipts issued for a message.

`issued_receipts` gives, for one message UUID, each signed receipt the receipt
worker has filed in a Receipts mailbox of the given tenant's accounts, with the
SHA-256 of the filed receipt message (its bytes are in the blob store).  Receipts
still queued or failed are not listed: they have no signed message yet.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from bridge.store import models as m


@dataclass(frozen=True)
class IssuedReceipt:
    evidence_id: str
    event: str                    # ETSI EN 319 522 name, e.g. SubmissionAcceptance
    recipient: str                # "" when not per recipient
    time: dt.datetime             # of the attested event
    owner: str                    # login whose Receipts mailbox holds it
    sha256: str                   # the filed receipt message's blob


def issued_receipts(store: Any, message_uuid: str, tenant: str) -> list[IssuedReceipt]:
    """Signed receipts for `message_uuid` filed for accounts of `tenant`, in issue order."""
    attested, filed = aliased(m.Message), aliased(m.Message)
    r = m.Receipt
    q = (select(r.evidence_id, r.event, r.recipient, r.time, m.Account.login, filed.sha256)
         .join(attested, attested.id == r.message_id)
         .join(filed, filed.id == r.filed_message_id)
         .join(m.Account, m.Account.id == r.owner_account_id)
         .join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
         .where(attested.uuid == message_uuid, m.Tenant.name == tenant, r.state == "done")
         .order_by(r.id))
    with store.ro() as s:
        return [IssuedReceipt(*row) for row in s.execute(q)]

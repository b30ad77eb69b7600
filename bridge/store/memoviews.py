"""Read-only queries behind a message's MeMo: who sent it, to whom, and its thread.

`message_parties` gives one accepted message with its sender's identity (account,
party, tenant, the contact point it was sent as) and each recipient's (the account or
contact point a delivery job was made for, with its tenant and legal party): what
core/memoview.py needs to fill MeMo Sender and Recipient.  `uuids_by_message_id` and
`message_ids_by_uuid` map the thread both ways (MeMo ReplyData messageUUID <->
RFC 5322 Message-ID), limited to the messages of the scopes given (a whole tenant, or
one account's own messages in a tenant such as the citizens'), so a caller learns
nothing about anybody else's messages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import and_, false, or_, select

from bridge.store import models as m


@dataclass(frozen=True)
class Party:
    """A legal party as the store knows it."""

    kind: str                     # cpr | cvr
    identifier: str
    name: str


@dataclass(frozen=True)
class Side:
    """One end of a message: an account or a contact point, with its tenant and party."""

    address: str                  # the account's login or the contact point's address
    name: str                     # display name of the account or contact point
    account_id: int | None
    contact_point: str | None     # the contact point's address, if this end is one
    tenant_id: int
    tenant: str
    tenant_kind: str              # authority | company | citizens
    party: Party | None


@dataclass(frozen=True)
class MessageParties:
    uuid: str
    message_id: str
    tenant: str
    sha256: str
    internal_date: dt.datetime
    origin: str
    memo: dict[str, Any]
    sender: Side
    recipients: tuple[tuple[str, Side], ...]   # (address as given at RCPT, the end it reached)


def message_parties(store: Any, message_uuid: str) -> MessageParties | None:
    """The message with `message_uuid` and its two ends, or None."""
    msg, acct, tenant, party = m.Message, m.Account, m.Tenant, m.Party
    with store.ro() as s:
        row = s.execute(
            select(msg, acct, tenant, party)
            .join(tenant, tenant.id == msg.tenant_id)
            .outerjoin(acct, acct.id == msg.sender_account_id)
            .outerjoin(party, party.id == msg.sender_party_id)
            .where(msg.uuid == message_uuid)).first()
        if row is None:
            return None
        message, account, sender_tenant, sender_party = row
        cp = s.scalar(select(m.ContactPoint).where(m.ContactPoint.address == message.from_address))
        account_id = account.id if account else None
        t = sender_tenant
        if cp is not None and cp.tenant_id == t.id:
            sender = Side(cp.address, cp.name, account_id, cp.address, t.id, t.name, t.kind,
                          _party(s, t.party_id))
        else:
            sender = Side(message.from_address, account.display_name if account else "", account_id, None,
                          t.id, t.name, t.kind, _as_party(sender_party))
        jobs = s.scalars(select(m.DeliveryJob).where(m.DeliveryJob.message_id == message.id,
                                                     m.DeliveryJob.kind == "inbox")
                         .order_by(m.DeliveryJob.id)).all()
        recipients = tuple((job.recipient, _job_side(s, job)) for job in jobs)
        return MessageParties(uuid=message.uuid, message_id=message.message_id, tenant=sender_tenant.name,
                              sha256=message.sha256, internal_date=message.internal_date,
                              origin=message.origin, memo=dict(message.memo or {}), sender=sender,
                              recipients=recipients)


def _job_side(s: Any, job: m.DeliveryJob) -> Side:
    if job.contact_point_id is not None:
        cp = s.get(m.ContactPoint, job.contact_point_id)
        t = s.get(m.Tenant, cp.tenant_id)
        return Side(cp.address, cp.name, None, cp.address, t.id, t.name, t.kind, _party(s, t.party_id))
    a = s.get(m.Account, job.account_id)
    t = s.get(m.Tenant, a.tenant_id)
    return Side(a.login, a.display_name, a.id, None, t.id, t.name, t.kind, _party(s, a.party_id))


def _party(s: Any, party_id: int | None) -> Party | None:
    return _as_party(s.get(m.Party, party_id)) if party_id is not None else None


def _as_party(p: m.Party | None) -> Party | None:
    return Party(p.kind, p.identifier, p.name) if p is not None else None


Scope = tuple[int, "int | None"]   # (tenant id, account id or None for the whole tenant)


def _in_scopes(scopes: Iterable[Scope]) -> Any:
    terms = []
    for tenant_id, account_id in dict.fromkeys(scopes):
        term = m.Message.tenant_id == tenant_id
        terms.append(term if account_id is None else and_(term, m.Message.sender_account_id == account_id))
    return or_(*terms) if terms else false()


def uuids_by_message_id(store: Any, message_ids: Iterable[str], scopes: Iterable[Scope]) -> dict[str, str]:
    """Message-ID ("<...>") -> UUID of the oldest message with it within `scopes`."""
    wanted = [i for i in dict.fromkeys(message_ids) if i]
    if not wanted:
        return {}
    q = (select(m.Message.message_id, m.Message.uuid)
         .where(m.Message.message_id.in_(wanted), _in_scopes(scopes))
         .order_by(m.Message.internal_date.desc(), m.Message.id.desc()))
    with store.ro() as s:
        return {mid: uuid for mid, uuid in s.execute(q)}   # the oldest is written last


def message_ids_by_uuid(store: Any, uuids: Iterable[str], scopes: Iterable[Scope]) -> dict[str, str]:
    """UUID -> Message-ID of the messages with those UUIDs within `scopes` (none: left out)."""
    wanted = [u.lower() for u in dict.fromkeys(uuids) if u]
    if not wanted:
        return {}
    q = (select(m.Message.uuid, m.Message.message_id)
         .where(m.Message.uuid.in_(wanted), _in_scopes(scopes)))
    with store.ro() as s:
        return {uuid: mid for uuid, mid in s.execute(q) if mid}

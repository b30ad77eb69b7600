"""Reading the audit trail for `dp2bridge audit` and `dp2bridge trace` (DESIGN.md section 5).

Read-only queries over audit_events/audit_heads and messages, taking a
`SqlStore` and using its read sessions (`store.ro()`).  A chain of a million
events is never loaded at once: `chain_rows` walks it in keyset pages of
`PAGE` rows, ordered by seq, each page its own short read transaction (so a
long walk holds no snapshot or lock that the running bridge would wait for).
Rows are plain dicts with the audit_events columns (time as aware UTC,
details as a dict), the shape `core.audit.event_from_row` takes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import func, or_, select

from bridge.store import models as m

PAGE = 5000

_EV = m.AuditEvent.__table__
_HEAD = m.AuditHead.__table__
_MSG = m.Message.__table__


@dataclass(frozen=True)
class ChainState:
    """One chain as the database holds it, read in one statement (one snapshot): its
    stored head (None if audit_heads has no row for it) and the highest seq present."""

    chain: str
    head: tuple[int, str] | None
    max_seq: int


def chains(store: Any, only: str | None = None) -> list[ChainState]:
    """Every chain that has a head row or event rows (or just `only`), by name.  A chain
    with events but no head row is listed too: its head was deleted."""
    names = select(_EV.c.chain).distinct().union(select(_HEAD.c.chain)).subquery()
    top = select(func.max(_EV.c.seq)).where(_EV.c.chain == names.c.chain).scalar_subquery()
    q = (select(names.c.chain, _HEAD.c.seq, _HEAD.c.hash, top)
         .outerjoin(_HEAD, _HEAD.c.chain == names.c.chain).order_by(names.c.chain))
    if only is not None:
        q = q.where(names.c.chain == only)
    with store.ro() as s:
        return [ChainState(chain, None if seq is None else (seq, digest), top_seq or 0)
                for chain, seq, digest, top_seq in s.execute(q)]


def chain_rows(store: Any, chain: str, *, upto: int | None = None,
               since: dt.datetime | None = None, page: int = PAGE) -> Iterator[dict[str, Any]]:
    """The rows of `chain` in seq order (seq <= `upto`, time >= `since` when given),
    fetched `page` rows at a time."""
    after = 0
    while True:
        q = select(_EV).where(_EV.c.chain == chain, _EV.c.seq > after).order_by(_EV.c.seq).limit(page)
        if upto is not None:
            q = q.where(_EV.c.seq <= upto)
        if since is not None:
            q = q.where(_EV.c.time >= since)
        with store.ro() as s:
            rows = [dict(r) for r in s.execute(q).mappings()]
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1]["seq"]


def count_upto(store: Any, chain: str, seq: int) -> int:
    """How many events of `chain` have a seq up to `seq`."""
    with store.ro() as s:
        return s.scalar(select(func.count()).select_from(_EV)
                        .where(_EV.c.chain == chain, _EV.c.seq <= seq)) or 0


def head_with_count(store: Any, chain: str) -> tuple[int, str, int] | None:
    """(seq, hash, number of events up to seq) of the chain's stored head, in one
    statement; None if the chain has no head."""
    n = select(func.count()).select_from(_EV).where(
        _EV.c.chain == _HEAD.c.chain, _EV.c.seq <= _HEAD.c.seq).scalar_subquery()
    with store.ro() as s:
        row = s.execute(select(_HEAD.c.seq, _HEAD.c.hash, n).where(_HEAD.c.chain == chain)).first()
    return None if row is None else (row[0], row[1], row[2])


def event_at(store: Any, chain: str, seq: int) -> dict[str, Any] | None:
    with store.ro() as s:
        row = s.execute(select(_EV).where(_EV.c.chain == chain, _EV.c.seq == seq)).mappings().first()
    return dict(row) if row else None


# --- messages -------------------------------------------------------------------

def find_messages(store: Any, ident: str) -> list[dict[str, Any]]:
    """Messages whose UUID is `ident`, or whose Message-ID is `ident` with or without its
    angle brackets (several messages may share one), oldest first; each with its tenant,
    sender login and recipients [{recipient, kind, state, attempts}]."""
    bare = ident.strip().removeprefix("<").removesuffix(">")
    q = (select(_MSG, m.Tenant.name.label("tenant"), m.Account.login.label("sender_login"))
         .join(m.Tenant, m.Tenant.id == _MSG.c.tenant_id)
         .outerjoin(m.Account, m.Account.id == _MSG.c.sender_account_id)
         .where(or_(_MSG.c.uuid == bare.lower(), _MSG.c.message_id.in_([f"<{bare}>", bare])))
         .order_by(_MSG.c.internal_date, _MSG.c.id))
    jobs = m.DeliveryJob.__table__
    with store.ro() as s:
        found = [dict(r) for r in s.execute(q).mappings()]
        for msg in found:
            msg["recipients"] = [dict(r) for r in s.execute(
                select(jobs.c.recipient, jobs.c.kind, jobs.c.state, jobs.c.attempts)
                .where(jobs.c.message_id == msg["id"]).order_by(jobs.c.id)).mappings()]
    return found


def message_events(store: Any, message_uuid: str) -> list[dict[str, Any]]:
    """Every audit event about `message_uuid`, across all chains, in time order."""
    q = (select(_EV).where(_EV.c.message_uuid == message_uuid)
         .order_by(_EV.c.time, _EV.c.chain, _EV.c.seq))
    with store.ro() as s:
        return [dict(r) for r in s.execute(q).mappings()]

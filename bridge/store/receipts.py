"""Receipts owed, leased, issued; read-status consents (issue 4, DESIGN.md section 5).

`owe` runs inside the transaction of the event a receipt attests (acceptance,
filing, a failure for good, a read with consent, handling started) and records
that event's audit link with it; the unique (message, event, recipient) key
makes a second receipt for one event impossible.  The receipt worker
(core/receipts.py) leases owed receipts (`ReceiptRepository.claim`), builds and
signs them, and files each in its owner's Receipts mailbox (`file`) in one
transaction with the `receipt.issued` audit event.  Consents are looked up in
the transaction of the flag change they gate (`consented`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from bridge.core.audit import AuditEvent
from bridge.core.messages import Filed
from bridge.errors import NotFound
from bridge.store import models as m

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class AuditRef:
    """Where an event sits in the audit trail: what a receipt's evidence cites."""

    chain: str
    seq: int
    hash: str
    time: dt.datetime


@dataclass(frozen=True)
class Owed:
    """A leased receipt with everything its evidence and message need."""

    id: int
    evidence_id: str
    event: str
    recipient: str
    lease_token: str
    attempts: int
    time: dt.datetime
    audit_chain: str
    audit_seq: int
    audit_hash: str
    details: dict[str, Any]
    issuer_name: str                  # display name of the tenant whose chain holds the event
    message_pk: int
    message_uuid: str
    message_id: str
    thread_id: str
    sha256: str
    subject: str | None
    from_address: str
    sender_name: str
    sender_party: str | None          # "cpr:..." / "cvr:..."
    auth: list[dict[str, Any]]        # the message's signature results (crypto.results.SigResult)
    owner_id: int
    owner_login: str
    owner_name: str
    owner_tenant_id: int
    owner_tenant_kind: str


def owe(store: Any, s: Session, *, message_pk: int, event: str, ref: AuditRef, recipient: str = "",
        owner_account_id: int | None = None, details: dict[str, Any] | None = None) -> bool:
    """Owe a receipt for `event` of the message to `owner_account_id` (default: the message's
    sending account; messages without one, e.g. receipts themselves, get none).  False when
    it is owed already or has no owner."""
    # Prepared statements on the transaction's cursor (store/prepared.py): this runs for every
    # acceptance and every filing.  Callers flush whatever the ORM holds before calling.
    q = store._q
    if owner_account_id is None:
        row = store._run(s, q.message_sender, {"message_pk": message_pk}).fetchone()
        owner_account_id = row[0] if row else None
        if owner_account_id is None:
            return False
    now = store.clock.now()
    return store._run(s, q.owe_receipt, {
        "evidence_id": str(uuid.uuid4()), "message_id": message_pk, "event": event,
        "recipient": recipient[:320], "owner_account_id": owner_account_id, "audit_chain": ref.chain,
        "audit_seq": ref.seq, "audit_hash": ref.hash, "time": ref.time, "details": details or {},
        "state": "queued", "attempts": 0, "next_attempt_at": now, "created_at": now}).rowcount == 1


def consented(s: Session, citizen_party_id: int | None, sender_party_id: int | None) -> bool:
    if citizen_party_id is None or sender_party_id is None:
        return False
    return s.execute(select(m.Consent.created_at).where(
        m.Consent.citizen_party_id == citizen_party_id,
        m.Consent.sender_party_id == sender_party_id)).first() is not None


def _view_query() -> Any:
    msg = m.Message
    sender, owner = aliased(m.Account), aliased(m.Account)
    sparty, issuer, otenant = aliased(m.Party), aliased(m.Tenant), aliased(m.Tenant)
    return select(
        m.Receipt.id, m.Receipt.evidence_id, m.Receipt.event, m.Receipt.recipient, m.Receipt.lease_token,
        m.Receipt.attempts, m.Receipt.time, m.Receipt.audit_chain, m.Receipt.audit_seq, m.Receipt.audit_hash,
        m.Receipt.details, func.coalesce(issuer.display_name, m.Receipt.audit_chain),
        msg.id, msg.uuid, msg.message_id, msg.thread_id, msg.sha256, msg.subject, msg.from_address,
        func.coalesce(sender.display_name, ""), sparty.kind, sparty.identifier, msg.auth,
        owner.id, owner.login, owner.display_name, otenant.id, otenant.kind,
    ).select_from(m.Receipt).join(msg, msg.id == m.Receipt.message_id) \
        .outerjoin(sender, sender.id == msg.sender_account_id) \
        .outerjoin(sparty, sparty.id == msg.sender_party_id) \
        .outerjoin(issuer, issuer.name == m.Receipt.audit_chain) \
        .join(owner, owner.id == m.Receipt.owner_account_id) \
        .join(otenant, otenant.id == owner.tenant_id)


_VIEW = _view_query()


def _owed(row: Any) -> Owed:
    (rid, evidence_id, event, recipient, token, attempts, time, chain, seq, digest, details, issuer_name,
     message_pk, message_uuid, message_id, thread_id, sha256, subject, from_address, sender_name,
     party_kind, party_ident, auth, owner_id, owner_login, owner_name, tenant_id, tenant_kind) = row
    return Owed(rid, evidence_id, event, recipient, token, attempts, time, chain, seq, digest,
                dict(details or {}), issuer_name, message_pk, message_uuid, message_id, thread_id, sha256,
                subject, from_address, sender_name,
                f"{party_kind}:{party_ident}" if party_kind else None, list(auth or []),
                owner_id, owner_login, owner_name, tenant_id, tenant_kind)


class ReceiptRepository:
    """The receipt worker's view of the store."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def claim(self, limit: int, lease_seconds: float) -> list[Owed]:
        now = self.store.clock.now()
        token = str(uuid.uuid4())
        r = m.Receipt
        ready = select(r.id).where(or_((r.state == "queued") & (r.next_attempt_at <= now),
                                       (r.state == "running") & (r.lease_until < now))) \
            .order_by(r.id).limit(limit)
        if not self.store.is_sqlite:
            ready = ready.with_for_update(skip_locked=True)

        def unit(s: Session) -> list[Owed]:
            s.flush()
            taken = s.execute(update(r).where(r.id.in_(ready)).values(
                state="running", lease_token=token, attempts=r.attempts + 1,
                lease_until=now + dt.timedelta(seconds=lease_seconds)).execution_options(
                synchronize_session=False))
            if taken.rowcount == 0:
                return []
            rows = s.execute(_VIEW.where(r.state == "running", r.lease_token == token).order_by(r.id))
            return [_owed(row) for row in rows]
        return self.store._shared(unit)

    def party_of(self, address: str) -> tuple[str | None, str]:
        """(party "kind:identifier" or None, display name) of a local address: an account's own
        party, a contact point's tenant party, a CPR directory address's citizen."""
        with self.store.ro() as s:
            row = s.execute(select(m.Party.kind, m.Party.identifier, m.Account.display_name).join(
                m.Account, m.Account.party_id == m.Party.id).where(m.Account.login == address.lower())).first()
            if row:
                return f"{row[0]}:{row[1]}", row[2]
            row = s.execute(select(m.Party.kind, m.Party.identifier, m.ContactPoint.name).select_from(
                m.ContactPoint).join(m.Tenant, m.Tenant.id == m.ContactPoint.tenant_id).outerjoin(
                m.Party, m.Party.id == m.Tenant.party_id).where(m.ContactPoint.address == address.lower())).first()
            if row:
                return (f"{row[0]}:{row[1]}" if row[0] else None), row[2]
        local = address.split("@", 1)[0]
        if address.lower().split("@", 1)[-1].startswith("cpr.") and local.isdigit():
            return f"cpr:{local}", ""
        if address.lower().split("@", 1)[-1].startswith("cvr.") and local.isdigit():
            return f"cvr:{local}", ""
        return None, ""

    def file_many(self, items: list[tuple[Owed, str, Any, dict[str, Any]]]) -> list[Filed | None]:
        """File signed receipts ((owed, blob sha256, analysis, {message_id, from_address,
        subject, audit})) in their owners' Receipts mailboxes, mark them issued and record
        their audit events, in one unit of the shared transaction: all or none.  None for a
        receipt whose lease was lost (another worker issues it)."""
        return self.store._shared(lambda s: [self._file(s, o, sha, info, **fields)
                                             for o, sha, info, fields in items])

    def _file(self, s: Session, owed: Owed, sha256: str, info: Any, *, message_id: str, from_address: str,
              subject: str, audit: AuditEvent) -> Filed | None:
        store = self.store
        s.flush()
        q = store._q
        done = store._run(s, q.finish_receipt, {"receipt_id": owed.id, "token": owed.lease_token})
        if done.rowcount != 1:
            return None
        store._content(s, sha256, info)
        now = store.clock.now()
        message_uuid = str(uuid.uuid4())
        cur = store._run(s, q.insert_receipt_message, {
            "uuid": message_uuid, "tenant_id": owed.owner_tenant_id, "message_id": message_id,
            "thread_id": owed.thread_id, "in_reply_to": owed.message_id or None, "sender_account_id": None,
            "sender_party_id": None, "from_address": from_address, "subject": subject, "sha256": sha256,
            "size": info.size, "internal_date": now, "origin": "receipt", "session_id": None,
            "state": "delivered", "memo": {}})
        receipt_pk = cur.lastrowid if q.sqlite else cur.fetchone()[0]
        store._run(s, q.receipt_filed_as, {"receipt_id": owed.id, "filed_pk": receipt_pk})
        box_id, uid, modseq = store._take_uid(s, "account_id", owed.owner_id, "Receipts")
        store._run(s, q.insert_entry, {
            "mailbox_id": box_id, "uid": uid, "message_id": receipt_pk, "sha256": sha256, "flags": "",
            "keywords": "", "modseq": modseq, "internal_date": now})
        store._audit(s, audit)
        return Filed(box_id, uid, modseq, message_uuid)

    def fail(self, owed: Owed, error: str, retry_at: dt.datetime | None) -> None:
        r = m.Receipt
        values: dict[str, Any] = {"last_error": error[:2000], "lease_until": None}
        values.update(state="queued", next_attempt_at=retry_at) if retry_at else values.update(state="failed")
        with self.store.tx() as s:
            s.execute(update(r).where(r.id == owed.id, r.lease_token == owed.lease_token,
                                      r.state == "running").values(**values))

    def release_leases(self) -> int:
        with self.store.tx() as s:
            return s.execute(update(m.Receipt).where(m.Receipt.state == "running").values(
                state="queued", lease_token=None, lease_until=None)).rowcount

    def receipts(self, message_uuid: str | None = None, owner: str | None = None) -> list[dict]:
        """Receipts owed or issued (for trace, verify and tests)."""
        q = select(m.Receipt, m.Message.uuid).join(m.Message, m.Message.id == m.Receipt.message_id) \
            .order_by(m.Receipt.id)
        if message_uuid:
            q = q.where(m.Message.uuid == message_uuid)
        if owner:
            q = q.join(m.Account, m.Account.id == m.Receipt.owner_account_id).where(
                m.Account.login == owner.lower())
        with self.store.ro() as s:
            return [{"evidence_id": rc.evidence_id, "event": rc.event, "recipient": rc.recipient,
                     "state": rc.state, "audit_chain": rc.audit_chain, "audit_seq": rc.audit_seq,
                     "audit_hash": rc.audit_hash, "time": rc.time, "message_uuid": mu,
                     "details": dict(rc.details or {}), "attempts": rc.attempts}
                    for rc, mu in s.execute(q)]

    def by_evidence(self, evidence_id: str) -> dict | None:
        with self.store.ro() as s:
            row = s.execute(select(m.Receipt, m.Message).join(
                m.Message, m.Message.id == m.Receipt.message_id).where(
                m.Receipt.evidence_id == evidence_id)).first()
            if row is None:
                return None
            rc, msg = row
            return {"evidence_id": rc.evidence_id, "event": rc.event, "recipient": rc.recipient,
                    "audit_chain": rc.audit_chain, "audit_seq": rc.audit_seq, "audit_hash": rc.audit_hash,
                    "message_uuid": msg.uuid, "message_id": msg.message_id, "sha256": msg.sha256,
                    "details": dict(rc.details or {})}


class ConsentRepository:
    """`dp2bridge consent grant|revoke|list`: citizen party x sender party."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def grant(self, citizen_party_id: int, sender_party_id: int, audit: AuditEvent) -> bool:
        ins = sqlite_insert if self.store.is_sqlite else pg_insert
        with self.store.tx() as s:
            added = s.execute(ins(m.Consent).values(
                citizen_party_id=citizen_party_id, sender_party_id=sender_party_id,
                created_at=self.store.clock.now()).on_conflict_do_nothing()).rowcount == 1
            if added:
                self.store._audit(s, audit)
            return added

    def revoke(self, citizen_party_id: int, sender_party_id: int, audit: AuditEvent) -> bool:
        with self.store.tx() as s:
            gone = s.execute(delete(m.Consent).where(
                m.Consent.citizen_party_id == citizen_party_id,
                m.Consent.sender_party_id == sender_party_id)).rowcount == 1
            if gone:
                self.store._audit(s, audit)
            return gone

    def list(self, citizen_party_id: int | None = None) -> list[dict]:
        cit, snd = aliased(m.Party), aliased(m.Party)
        q = select(cit.kind, cit.identifier, snd.kind, snd.identifier, snd.name, m.Consent.created_at) \
            .select_from(m.Consent).join(cit, cit.id == m.Consent.citizen_party_id) \
            .join(snd, snd.id == m.Consent.sender_party_id).order_by(cit.identifier, snd.identifier)
        if citizen_party_id is not None:
            q = q.where(m.Consent.citizen_party_id == citizen_party_id)
        with self.store.ro() as s:
            return [{"citizen": f"{a}:{b}", "sender": f"{c}:{d}", "sender_name": e, "since": f}
                    for a, b, c, d, e, f in s.execute(q)]

    def party_of_citizen(self, login: str) -> tuple[int, str]:
        """(party id, tenant chain) of a citizen account; NotFound otherwise."""
        with self.store.ro() as s:
            row = s.execute(select(m.Account.party_id, m.Account.role, m.Party.kind, m.Tenant.name)
                            .join(m.Party, m.Party.id == m.Account.party_id)
                            .join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
                            .where(m.Account.login == login.strip().lower())).first()
        if row is None:
            raise NotFound(f"no account {login!r}; see `dp2bridge account list`")
        if row[2] != "cpr":
            raise NotFound(f"{login} is not a citizen's account (consent is a citizen's choice)")
        return row[0], row[3]

    def party_of_sender(self, text: str) -> tuple[int, str]:
        """(party id, label) of a sender given as a tenant name, a CVR number (cvr:N or N) or a
        login/contact point address."""
        t = text.strip().lower()
        with self.store.ro() as s:
            row = s.execute(select(m.Tenant.party_id, m.Tenant.display_name).where(m.Tenant.name == t)).first()
            if row is None and t.removeprefix("cvr:").isdigit():
                row = s.execute(select(m.Party.id, m.Party.name).where(
                    m.Party.kind == "cvr", m.Party.identifier == t.removeprefix("cvr:"))).first()
            if row is None and "@" in t:
                row = s.execute(select(m.Account.party_id, m.Account.display_name).where(
                    m.Account.login == t)).first() or s.execute(
                    select(m.Tenant.party_id, m.ContactPoint.name).join(
                        m.Tenant, m.Tenant.id == m.ContactPoint.tenant_id).where(m.ContactPoint.address == t)).first()
        if row is None or row[0] is None:
            raise NotFound(f"no sender {text!r}: give a tenant name, a CVR number or an address "
                           f"(see `dp2bridge tenant list`)")
        return row[0], row[1]


# --- what IMAP actions mean for receipts (called inside their transactions) ----------

HANDLING_KEYWORD = "$Handling"


def after_flags(store: Any, s: Session, box: Any, added: list[tuple[int, set[str]]],
                actor_account_id: int | None, protocol: str = "imap") -> None:
    """Flags were added to entries of `box` ((message pk, flags added; keywords lowercased)
    pairs) by the account
    `actor_account_id`: a citizen's \\Seen is a read (evidence only with consent), staff's
    $Handling on a contact point's message is handling started."""
    for message_pk, flags in added:
        if "\\Seen" in flags and box.account_id is not None:
            _read(store, s, box.account_id, message_pk, protocol, read_mode="consent")
        if HANDLING_KEYWORD.lower() in flags and box.contact_point_id is not None:
            handling(store, s, box.contact_point_id, message_pk, actor_account_id, "keyword", protocol)


def _read(store: Any, s: Session, reader_id: int, message_pk: int, protocol: str, read_mode: str) -> bool:
    """A citizen read a message: the `read` event goes to the sender's chain with a receipt
    when the citizen consents to this sender, else to the citizen's own chain only.
    True when read evidence is owed."""
    row = s.execute(select(m.Account.login, m.Account.party_id, m.Party.kind, m.Tenant.name).join(
        m.Party, m.Party.id == m.Account.party_id).join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
        .where(m.Account.id == reader_id)).first()
    msg = s.execute(select(m.Message.uuid, m.Message.sender_account_id, m.Message.sender_party_id,
                           m.Tenant.name).join(m.Tenant, m.Tenant.id == m.Message.tenant_id)
                    .where(m.Message.id == message_pk)).first()
    if row is None or msg is None or row[2] != "cpr" or msg[1] is None or msg[1] == reader_id:
        return False
    login, party_id, _, reader_chain = row
    message_uuid, sender_id, sender_party, sender_chain = msg
    agreed = read_mode == "mdn" or consented(s, party_id, sender_party)
    event = AuditEvent(time=store.clock.now(), chain=sender_chain if agreed else reader_chain, kind="read",
                       result="ok", actor=login, subject=login, message_uuid=message_uuid, protocol=protocol,
                       details={"consent": read_mode if agreed else "none"})
    if not agreed:
        store._audit(s, event)
        return False
    owe(store, s, message_pk=message_pk, event="ContentAccessTracking", ref=store._audit_ref(s, event),
        recipient=login, owner_account_id=sender_id, details={"read_mode": read_mode, "owner": login})
    return True


def read_by_mdn(store: Any, reader_id: int, original_message_id: str) -> str | None:
    """The reader's own client sent an MDN (RFC 8098, "displayed") for the message with this
    Message-ID that it received: signed read evidence for its sender.  Returns the message
    UUID, or None when the reader received no such message."""
    def unit(s: Session) -> str | None:
        s.flush()
        found = s.execute(select(m.Message.id, m.Message.uuid).join(
            m.MailboxEntry, m.MailboxEntry.message_id == m.Message.id).join(
            m.Mailbox, m.Mailbox.id == m.MailboxEntry.mailbox_id).where(
            m.Mailbox.account_id == reader_id, m.Message.message_id == original_message_id,
            m.Message.sender_account_id != reader_id).limit(1)).first()
        if found is None or not _read(store, s, reader_id, found[0], "smtp", read_mode="mdn"):
            return None
        return found[1]
    return store._shared(unit)


def handling(store: Any, s: Session, contact_point_id: int, message_pk: int, actor_account_id: int | None,
             how: str, protocol: str = "imap") -> bool:
    """Staff took a message from a contact point's mailbox (moved it, or set $Handling): the
    sender, when outside the contact point's tenant, gets one HandlingStarted receipt naming
    the contact point, and the caseworker where the tenant's policy
    `handling_names_caseworker` says so."""
    if s.execute(select(m.Receipt.id).where(m.Receipt.message_id == message_pk,
                                            m.Receipt.event == "HandlingStarted")).first():
        return False
    cp = s.execute(select(m.ContactPoint.address, m.ContactPoint.name, m.Tenant.id, m.Tenant.name,
                          m.Tenant.policy).join(m.Tenant, m.Tenant.id == m.ContactPoint.tenant_id)
                   .where(m.ContactPoint.id == contact_point_id)).first()
    msg = s.execute(select(m.Message.uuid, m.Message.sender_account_id, m.Account.tenant_id).join(
        m.Account, m.Account.id == m.Message.sender_account_id).where(m.Message.id == message_pk)).first()
    if cp is None or msg is None or msg[2] == cp[2]:
        return False
    address, name, _, chain, policy = cp
    actor = s.execute(select(m.Account.login, m.Account.display_name).where(
        m.Account.id == actor_account_id)).first() if actor_account_id else None
    named = bool(actor) and bool((policy or {}).get("handling_names_caseworker"))
    person = (actor[1] or actor[0]) if named else None
    event = AuditEvent(time=store.clock.now(), chain=chain, kind="handling", result="ok",
                       actor=actor[0] if actor else None, subject=address, message_uuid=msg[0],
                       protocol=protocol, details={"how": how, "contact_point": address})
    owe(store, s, message_pk=message_pk, event="HandlingStarted", ref=store._audit_ref(s, event),
        owner_account_id=msg[1], details={"contact_point": address, "handler": name,
                                          **({"handler_person": person} if person else {})})
    return True

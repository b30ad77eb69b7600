"""The SQL store: one implementation for SQLite (embedded default) and PostgreSQL.

Owns engines, transactions and every query.  Returns core value objects (or
plain dicts for admin listings); never returns ORM objects to callers.
Write transactions on SQLite start with BEGIN IMMEDIATE so two writers never
deadlock on a lock upgrade; reads use a separate engine with deferred BEGIN.
PostgreSQL claims delivery jobs with FOR UPDATE SKIP LOCKED so several nodes
can share one database (DESIGN.md section 11).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
import secrets
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bridge.clock import Clock
from bridge.core.audit import GENESIS, AuditEvent, link_hash
from bridge.core.identities import Address, AddressKind, Principal, Target
from bridge.core.messages import Filed, Job, Submission
from bridge.errors import AlreadyExists, NotFound, StorageUnavailable
from bridge.store import models as m
from bridge.store.groupcommit import GroupCommitter

T = TypeVar("T")

CACHE_SECONDS = 2.0
STANDARD_MAILBOXES = (("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                      ("Trash", "\\Trash"), ("Archive", "\\Archive"), ("Receipts", None))


def make_engine(url: str, *, immediate: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=8, max_overflow=8)
        _sqlite_setup(engine, immediate)
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_setup(engine: Engine, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None          # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")      # a commit is on disk before COMMIT returns
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SqlStore:
    """See `bridge.store.repository.Store`."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self.is_sqlite = url.startswith("sqlite")
        self.write_engine = make_engine(url, immediate=True)
        self.read_engine = make_engine(url, immediate=False) if self.is_sqlite else self.write_engine
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._committer: GroupCommitter | None = None
        self._cache: dict[Any, tuple[float, Any]] = {}
        self._committer_lock = threading.Lock()

    def _shared(self, unit: Callable[[Session], T]) -> T:
        """Run `unit` in a transaction shared with concurrent callers (group commit)."""
        with self._committer_lock:
            if self._committer is None:
                self._committer = GroupCommitter(self.tx)
        return self._committer.run(unit)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    def migrate(self) -> None:
        """Bring the database schema to the newest migration (idempotent)."""
        from bridge.store import migrate
        migrate.upgrade(self.write_engine)

    def check_schema(self) -> None:
        """Raise StorageUnavailable unless the database is at the newest migration."""
        from bridge.store import migrate
        have, want = migrate.current(self.read_engine), migrate.head()
        if have != want:
            raise StorageUnavailable(
                f"database schema is at {have or 'nothing'}, this version needs {want}",
                public=f"the database is not initialised or not upgraded (schema {have or 'none'}, "
                       f"need {want}); run `dp2bridge init` for a new home or `dp2bridge upgrade`")

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def ro(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    # --- audit -------------------------------------------------------------------

    def _audit(self, s: Session, ev: AuditEvent) -> str:
        """Append `ev` to its chain in the caller's transaction.  The chain's head row is
        locked until commit, so concurrent appenders (threads or nodes) queue up behind it
        and every chain stays linear.  Call it last in a transaction (lock order:
        delivery job, content, mailbox, message, audit head)."""
        head = self._audit_head(s, ev.chain)
        digest = link_hash(head.hash, ev)
        s.add(m.AuditEvent(chain=ev.chain, seq=head.seq + 1, time=ev.time, kind=ev.kind,
                           message_uuid=ev.message_uuid, actor=ev.actor, subject=ev.subject,
                           protocol=ev.protocol, session_id=ev.session_id, result=ev.result,
                           details=ev.details, prev_hash=head.hash, hash=digest))
        head.seq += 1
        head.hash = digest
        return digest

    def _audit_head(self, s: Session, chain: str) -> m.AuditHead:
        head = s.get(m.AuditHead, chain, with_for_update=True)
        if head is not None:
            return head
        try:        # a new chain; another transaction may be creating it at this moment
            with s.begin_nested():
                s.add(m.AuditHead(chain=chain, seq=0, hash=GENESIS))
        except IntegrityError:
            pass    # it did and has committed: lock its row below
        return s.get(m.AuditHead, chain, with_for_update=True, populate_existing=True)

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
            return [_row(e) for e in s.scalars(q)]

    # --- tenants -----------------------------------------------------------------

    def add_tenant(self, name: str, display_name: str, kind: str, cvr: str | None,
                   domains: list[str], policy: dict[str, Any], audit: AuditEvent) -> None:
        with self.tx() as s:
            if s.scalar(select(m.Tenant).where(m.Tenant.name == name)):
                raise AlreadyExists(f"tenant {name!r} already exists (see `dp2bridge tenant list`)")
            party = self._party(s, "cvr", cvr, display_name) if cvr else None
            t = m.Tenant(name=name, display_name=display_name, kind=kind, policy=policy,
                         party_id=party.id if party else None, created_at=self.clock.now())
            s.add(t)
            s.flush()
            for d in domains:
                if s.get(m.TenantDomain, d):
                    raise AlreadyExists(f"domain {d} already belongs to a tenant")
                s.add(m.TenantDomain(domain=d, tenant_id=t.id))
            self._audit(s, audit)

    def _party(self, s: Session, kind: str, ident: str, name: str) -> m.Party:
        party = s.scalar(select(m.Party).where(m.Party.kind == kind, m.Party.identifier == ident))
        if party is None:
            party = m.Party(kind=kind, identifier=ident, name=name)
            s.add(party)
            s.flush()
        return party

    def tenants(self) -> list[dict]:
        with self.ro() as s:
            return [self._tenant_dict(s, t) for t in s.scalars(select(m.Tenant).order_by(m.Tenant.name))]

    def tenant(self, name: str) -> dict:
        with self.ro() as s:
            return self._tenant_dict(s, self._get_tenant(s, name), detail=True)

    def _get_tenant(self, s: Session, name: str) -> m.Tenant:
        t = s.scalar(select(m.Tenant).where(m.Tenant.name == name))
        if t is None:
            raise NotFound(f"no tenant named {name!r} (see `dp2bridge tenant list`)")
        return t

    def _tenant_dict(self, s: Session, t: m.Tenant, detail: bool = False) -> dict:
        party = s.get(m.Party, t.party_id) if t.party_id else None
        out = {"name": t.name, "display_name": t.display_name, "kind": t.kind,
               "cvr": party.identifier if party else None,
               "domains": sorted(s.scalars(select(m.TenantDomain.domain).where(
                   m.TenantDomain.tenant_id == t.id))),
               "policy": t.policy, "created_at": t.created_at.isoformat()}
        if detail:
            out["accounts"] = s.scalar(select(func.count()).select_from(m.Account).where(
                m.Account.tenant_id == t.id))
            out["contact_points"] = list(s.scalars(select(m.ContactPoint.address).where(
                m.ContactPoint.tenant_id == t.id).order_by(m.ContactPoint.address)))
        return out

    def _cached(self, key: Any, compute: Callable[[], T]) -> T:
        """Directory lookups asked for every RCPT are cached for CACHE_SECONDS: a change made
        with `dp2bridge` (another process) takes effect within that time."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        value = compute()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, value)
        return value

    def domain_kinds(self) -> dict[str, str]:
        return self._cached("domain_kinds", self._domain_kinds)

    def _domain_kinds(self) -> dict[str, str]:
        with self.ro() as s:
            rows = s.execute(select(m.TenantDomain.domain, m.Tenant.kind).join(
                m.Tenant, m.Tenant.id == m.TenantDomain.tenant_id))
            return {d: k for d, k in rows}

    # --- accounts ----------------------------------------------------------------

    def add_account(self, login: str, tenant: str, display_name: str, cpr: str | None,
                    password_hash: str | None, audit: AuditEvent) -> None:
        with self.tx() as s:
            t = self._get_tenant(s, tenant)
            self._check_address_free(s, login)
            if t.kind == "citizens":
                party, role = self._party(s, "cpr", cpr or "", display_name), "citizen"
                if s.scalar(select(m.Account).where(m.Account.party_id == party.id)):
                    raise AlreadyExists("that CPR number already has an account")
            else:
                party, role = s.get(m.Party, t.party_id), "staff"
            a = m.Account(tenant_id=t.id, login=login, party_id=party.id, role=role,
                          display_name=display_name, password_hash=password_hash,
                          created_at=self.clock.now())
            s.add(a)
            s.flush()
            self._create_mailboxes(s, account_id=a.id)
            self._audit(s, audit)

    def _check_address_free(self, s: Session, address: str) -> None:
        if s.scalar(select(m.Account.id).where(m.Account.login == address)) or \
                s.scalar(select(m.ContactPoint.id).where(m.ContactPoint.address == address)):
            raise AlreadyExists(f"{address} is already an account or contact point")

    def _create_mailboxes(self, s: Session, account_id: int | None = None,
                          contact_point_id: int | None = None) -> None:
        names = STANDARD_MAILBOXES if account_id else STANDARD_MAILBOXES[:1]
        for name, special in names:
            s.add(m.Mailbox(account_id=account_id, contact_point_id=contact_point_id, name=name,
                            special_use=special, uidvalidity=secrets.randbelow(2**31 - 2) + 1,
                            uidnext=1, highestmodseq=1, subscribed=True,
                            created_at=self.clock.now()))

    def accounts(self, tenant: str | None = None) -> list[dict]:
        q = select(m.Account, m.Tenant.name, m.Party).join(m.Tenant, m.Tenant.id == m.Account.tenant_id) \
            .join(m.Party, m.Party.id == m.Account.party_id).order_by(m.Account.login)
        if tenant:
            q = q.where(m.Tenant.name == tenant)
        with self.ro() as s:
            if tenant:
                self._get_tenant(s, tenant)
            return [{"login": a.login, "tenant": tn, "role": a.role, "display_name": a.display_name,
                     "party": f"{p.kind}:{p.identifier}", "disabled": a.disabled,
                     "created_at": a.created_at.isoformat()} for a, tn, p in s.execute(q)]

    def _get_account(self, s: Session, login: str) -> m.Account:
        a = s.scalar(select(m.Account).where(m.Account.login == login.lower()))
        if a is None:
            raise NotFound(f"no account {login!r} (see `dp2bridge account list`)")
        return a

    def set_password(self, login: str, password_hash: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            self._get_account(s, login).password_hash = password_hash
            self._audit(s, audit)

    def add_app_password(self, login: str, name: str, password_hash: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            a = self._get_account(s, login)
            if s.scalar(select(m.AppPassword.id).where(m.AppPassword.account_id == a.id,
                        m.AppPassword.name == name, m.AppPassword.revoked_at.is_(None))):
                raise AlreadyExists(f"{login} already has an app password named {name!r}; "
                                    f"revoke it first or choose another name")
            s.add(m.AppPassword(account_id=a.id, name=name, password_hash=password_hash,
                                created_at=self.clock.now()))
            self._audit(s, audit)

    def app_passwords(self, login: str) -> list[dict]:
        with self.ro() as s:
            a = self._get_account(s, login)
            rows = s.scalars(select(m.AppPassword).where(m.AppPassword.account_id == a.id)
                             .order_by(m.AppPassword.created_at))
            return [{"name": p.name, "created_at": p.created_at.isoformat(),
                     "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None,
                     "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None} for p in rows]

    def revoke_app_password(self, login: str, name: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            a = self._get_account(s, login)
            p = s.scalar(select(m.AppPassword).where(m.AppPassword.account_id == a.id,
                         m.AppPassword.name == name, m.AppPassword.revoked_at.is_(None)))
            if p is None:
                raise NotFound(f"{login} has no active app password named {name!r} "
                               f"(see `dp2bridge account app-password list {login}`)")
            p.revoked_at = self.clock.now()
            self._audit(s, audit)

    # --- contact points --------------------------------------------------------

    def add_contact_point(self, address: str, tenant: str, name: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            t = self._get_tenant(s, tenant)
            if t.kind == "citizens":
                raise AlreadyExists("citizens tenants have no contact points")
            self._check_address_free(s, address)
            cp = m.ContactPoint(tenant_id=t.id, address=address, name=name, created_at=self.clock.now())
            s.add(cp)
            s.flush()
            self._create_mailboxes(s, contact_point_id=cp.id)
            self._audit(s, audit)

    def _get_contact_point(self, s: Session, address: str) -> m.ContactPoint:
        cp = s.scalar(select(m.ContactPoint).where(m.ContactPoint.address == address.lower()))
        if cp is None:
            raise NotFound(f"no contact point {address!r} (see `dp2bridge contact-point list`)")
        return cp

    def grant(self, address: str, login: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            cp, a = self._get_contact_point(s, address), self._get_account(s, login)
            if a.tenant_id != cp.tenant_id:
                raise NotFound(f"{login} is not staff of the tenant that owns {address}")
            if s.get(m.Grant, (cp.id, a.id)) is None:
                s.add(m.Grant(contact_point_id=cp.id, account_id=a.id, created_at=self.clock.now()))
            self._audit(s, audit)

    def revoke(self, address: str, login: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            cp, a = self._get_contact_point(s, address), self._get_account(s, login)
            g = s.get(m.Grant, (cp.id, a.id))
            if g is None:
                raise NotFound(f"{login} has no grant on {address}")
            s.delete(g)
            self._audit(s, audit)

    def contact_points(self, tenant: str | None = None) -> list[dict]:
        q = select(m.ContactPoint, m.Tenant.name).join(m.Tenant, m.Tenant.id == m.ContactPoint.tenant_id) \
            .order_by(m.ContactPoint.address)
        if tenant:
            q = q.where(m.Tenant.name == tenant)
        with self.ro() as s:
            out = []
            for cp, tn in s.execute(q):
                staff = s.scalars(select(m.Account.login).join(m.Grant, m.Grant.account_id == m.Account.id)
                                  .where(m.Grant.contact_point_id == cp.id).order_by(m.Account.login))
                out.append({"address": cp.address, "name": cp.name, "tenant": tn, "granted": list(staff)})
            return out

    # --- authentication ----------------------------------------------------------

    def credentials(self, login: str) -> tuple[int, str, list[tuple[int | None, str]]] | None:
        """(account id, audit chain, [(app password id or None for the main password, hash)]),
        or None when no enabled account of an enabled tenant has this login."""
        with self.ro() as s:
            row = s.execute(select(m.Account, m.Tenant).join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
                            .where(m.Account.login == login.lower())).first()
            if row is None or row[0].disabled or row[1].disabled:
                return None
            a, t = row
            hashes: list[tuple[int | None, str]] = [(None, a.password_hash)] if a.password_hash else []
            hashes += [(p.id, p.password_hash) for p in s.scalars(select(m.AppPassword).where(
                m.AppPassword.account_id == a.id, m.AppPassword.revoked_at.is_(None)))]
            return a.id, t.name, hashes

    def record_login(self, app_password_id: int | None, audit: AuditEvent) -> None:
        with self.tx() as s:
            if app_password_id is not None:
                s.execute(update(m.AppPassword).where(m.AppPassword.id == app_password_id)
                          .values(last_used_at=self.clock.now()))
            self._audit(s, audit)

    def principal(self, account_id: int) -> Principal:
        with self.ro() as s:
            a = s.get(m.Account, account_id)
            t, p = s.get(m.Tenant, a.tenant_id), s.get(m.Party, a.party_id)
            cps = s.scalars(select(m.ContactPoint.address).join(
                m.Grant, m.Grant.contact_point_id == m.ContactPoint.id).where(m.Grant.account_id == a.id))
            return Principal(
                account_id=a.id, login=a.login, display_name=a.display_name, role=a.role,
                tenant_id=t.id, tenant_name=t.name, tenant_kind=t.kind, party_id=p.id,
                party_kind=p.kind, party_identifier=p.identifier,
                may_address_cpr=t.kind == "authority" or bool(t.policy.get("may_address_cpr")),
                contact_points=frozenset(cps))

    # --- submission ----------------------------------------------------------------

    def resolve(self, address: Address) -> Target | None:
        return self._cached(("resolve", address.text), lambda: self._resolve(address))

    def _resolve(self, address: Address) -> Target | None:
        with self.ro() as s:
            if address.kind is AddressKind.CPR:
                return self._resolve_party_account(s, "cpr", address.local)
            if address.kind is AddressKind.CVR:
                return self._resolve_cvr(s, address.local)
            if address.kind is AddressKind.LOCAL:
                return self._resolve_local(s, address.text)
        return None

    def _target_account(self, s: Session, a: m.Account) -> Target | None:
        t = s.get(m.Tenant, a.tenant_id)
        if a.disabled or t.disabled:
            return None
        return Target("account", a.id, a.login, t.id, t.kind, a.party_id, t.kind == "citizens")

    def _target_cp(self, s: Session, cp: m.ContactPoint) -> Target | None:
        t = s.get(m.Tenant, cp.tenant_id)
        return None if t.disabled else Target("contact_point", cp.id, cp.address, t.id, t.kind,
                                              t.party_id, False)

    def _resolve_party_account(self, s: Session, kind: str, ident: str) -> Target | None:
        a = s.scalar(select(m.Account).join(m.Party, m.Party.id == m.Account.party_id).where(
            m.Party.kind == kind, m.Party.identifier == ident, m.Account.role == "citizen"))
        return self._target_account(s, a) if a else None

    def _resolve_cvr(self, s: Session, cvr: str) -> Target | None:
        """A CVR address reaches the tenant's default contact point (policy
        `default_contact_point`, else its only or first contact point)."""
        t = s.scalar(select(m.Tenant).join(m.Party, m.Party.id == m.Tenant.party_id).where(
            m.Party.kind == "cvr", m.Party.identifier == cvr))
        if t is None:
            return None
        q = select(m.ContactPoint).where(m.ContactPoint.tenant_id == t.id).order_by(m.ContactPoint.id)
        wanted = t.policy.get("default_contact_point")
        if wanted:
            q = q.where(m.ContactPoint.address == wanted)
        cp = s.scalars(q).first()
        return self._target_cp(s, cp) if cp else None

    def _resolve_local(self, s: Session, text: str) -> Target | None:
        cp = s.scalar(select(m.ContactPoint).where(m.ContactPoint.address == text))
        if cp:
            return self._target_cp(s, cp)
        a = s.scalar(select(m.Account).where(m.Account.login == text))
        return self._target_account(s, a) if a else None

    def corresponded(self, account_id: int, address: str) -> bool:
        """Has this account received a message from `address` (in any of its mailboxes)?"""
        with self.ro() as s:
            q = select(m.MailboxEntry.id).join(m.Mailbox, m.Mailbox.id == m.MailboxEntry.mailbox_id) \
                .join(m.Message, m.Message.id == m.MailboxEntry.message_id) \
                .where(m.Mailbox.account_id == account_id, m.Message.from_address == address).limit(1)
            return s.scalar(q) is not None

    def accept(self, sub: Submission, targets: list[Target], recipients: list[str],
               audit: AuditEvent, info: Any, *, dedup_since: dt.datetime | None = None,
               references: list[str] | None = None) -> tuple[str, bool]:
        """The message, its delivery jobs and its audit event, in ONE transaction (shared with
        concurrent acceptances, committed before this returns).  Returns (uuid, duplicate):
        when the same account submitted the same Message-ID since `dedup_since`, nothing is
        stored and the first acceptance's UUID is returned.  The thread is that of the first
        known message among `references`, else sub.thread_id.  `info` (the blob's
        MessageInfo) is kept as the content row of the accepted blob."""
        def unit(s: Session) -> tuple[str, bool]:
            earlier = self._duplicate(s, sub, dedup_since)
            if earlier:
                return earlier, True
            thread = self._thread_of(s, references or [])
            self._accept(s, replace(sub, thread_id=thread) if thread else sub, targets, recipients,
                         audit, info)
            return sub.uuid, False
        return self._shared(unit)

    def _duplicate(self, s: Session, sub: Submission, since: dt.datetime | None) -> str | None:
        if since is None or not sub.message_id:
            return None
        return s.scalar(select(m.Message.uuid).where(
            m.Message.sender_account_id == sub.sender_account_id, m.Message.message_id == sub.message_id,
            m.Message.internal_date >= since).order_by(m.Message.id).limit(1))

    def _thread_of(self, s: Session, message_ids: list[str]) -> str | None:
        if not message_ids:
            return None
        return s.scalar(select(m.Message.thread_id).where(m.Message.message_id.in_(message_ids[:100]))
                        .order_by(m.Message.id).limit(1))

    def _accept(self, s: Session, sub: Submission, targets: list[Target], recipients: list[str],
                audit: AuditEvent, info: Any) -> None:
        now = self.clock.now()
        self._content(s, sub.sha256, info)
        msg = m.Message(uuid=sub.uuid, tenant_id=sub.tenant_id, message_id=sub.message_id,
                        thread_id=sub.thread_id, in_reply_to=sub.in_reply_to,
                        sender_account_id=sub.sender_account_id, sender_party_id=sub.sender_party_id,
                        from_address=sub.from_address, subject=sub.subject, sha256=sub.sha256,
                        size=sub.size, internal_date=sub.internal_date, origin=sub.origin,
                        session_id=sub.session_id, memo=sub.memo)
        s.add(msg)
        s.flush()
        for target, rcpt in zip(targets, recipients):
            s.add(m.DeliveryJob(message_id=msg.id, kind="inbox", recipient=rcpt,
                                account_id=target.id if target.kind == "account" else None,
                                contact_point_id=target.id if target.kind == "contact_point" else None,
                                next_attempt_at=now, created_at=now))
        s.add(m.DeliveryJob(message_id=msg.id, kind="sent", recipient=sub.from_address,
                            account_id=sub.sender_account_id, next_attempt_at=now, created_at=now))
        self._audit(s, audit)

    # --- delivery ------------------------------------------------------------------

    def claim_jobs(self, limit: int, lease_seconds: float) -> list[Job]:
        now = self.clock.now()
        token = str(uuid.uuid4())
        with self.tx() as s:
            q = select(m.DeliveryJob.id).where(
                ((m.DeliveryJob.state == "queued") & (m.DeliveryJob.next_attempt_at <= now))
                | ((m.DeliveryJob.state == "running") & (m.DeliveryJob.lease_until < now))
            ).order_by(m.DeliveryJob.id).limit(limit)
            if not self.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            if not ids:
                return []
            s.execute(update(m.DeliveryJob).where(m.DeliveryJob.id.in_(ids)).values(
                state="running", lease_token=token, lease_until=now + dt.timedelta(seconds=lease_seconds),
                attempts=m.DeliveryJob.attempts + 1))
            return [self._job_view(s, j) for j in s.scalars(
                select(m.DeliveryJob).where(m.DeliveryJob.id.in_(ids)).order_by(m.DeliveryJob.id))]

    def _job_view(self, s: Session, j: m.DeliveryJob) -> Job:
        msg = s.get(m.Message, j.message_id)
        st = s.get(m.Tenant, msg.tenant_id)
        sender = s.get(m.Account, msg.sender_account_id) if msg.sender_account_id else None
        party = s.get(m.Party, msg.sender_party_id) if msg.sender_party_id else None
        if j.account_id:
            owner = s.get(m.Account, j.account_id)
            kind, oid, addr = "account", owner.id, owner.login
        else:
            owner = s.get(m.ContactPoint, j.contact_point_id)
            kind, oid, addr = "contact_point", owner.id, owner.address
        ot = s.get(m.Tenant, owner.tenant_id)
        return Job(id=j.id, kind=j.kind, recipient=j.recipient, lease_token=j.lease_token,
                   attempts=j.attempts, message_pk=msg.id, message_uuid=msg.uuid, sha256=msg.sha256,
                   tenant_name=st.name, from_address=msg.from_address,
                   sender_login=sender.login if sender else None,
                   sender_party=f"{party.kind}:{party.identifier}" if party else None,
                   sender_tenant_kind=st.kind, owner_kind=kind, owner_id=oid, owner_address=addr,
                   owner_chain=ot.name, owner_tenant_kind=ot.kind)

    def file(self, job: Job, sha256: str, info: Any, audit: AuditEvent) -> Filed | None:
        """File the job's copy (`sha256`, analysed as `info`) into the owner's INBOX or Sent,
        mark the job done and record the audit event, in one transaction (shared with
        concurrent filings).  None when the job is no longer ours (its lease expired and
        another worker took it)."""
        return self._shared(lambda s: self._file(s, job, sha256, info, audit))

    def _file(self, s: Session, job: Job, sha256: str, info: Any, audit: AuditEvent) -> Filed | None:
        now = self.clock.now()
        done = s.execute(update(m.DeliveryJob).where(
            m.DeliveryJob.id == job.id, m.DeliveryJob.state == "running",
            m.DeliveryJob.lease_token == job.lease_token).values(state="done", done_at=now,
                                                                  lease_until=None))
        if done.rowcount != 1:
            return None
        self._content(s, sha256, info)
        box = self._owner_mailbox(s, job)
        uid, modseq = box.uidnext, box.highestmodseq + 1
        box.uidnext, box.highestmodseq = uid + 1, modseq
        s.add(m.MailboxEntry(mailbox_id=box.id, uid=uid, message_id=job.message_pk, sha256=sha256,
                             flags="\\Seen" if job.kind == "sent" else "", keywords="",
                             modseq=modseq, internal_date=now))
        self._mark_delivered(s, job.message_pk)
        self._audit(s, audit)
        return Filed(box.id, uid, modseq, job.message_uuid)

    def _owner_mailbox(self, s: Session, job: Job) -> m.Mailbox:
        name = "Sent" if job.kind == "sent" else "INBOX"
        owner = m.Mailbox.account_id if job.owner_kind == "account" else m.Mailbox.contact_point_id
        q = select(m.Mailbox).where(owner == job.owner_id, m.Mailbox.name == name)
        return s.scalars(q.with_for_update()).one()

    def _content(self, s: Session, sha256: str, info: Any) -> None:
        """The content row for a blob, unless it exists (the same bytes filed twice, or by
        another node at the same moment): INSERT ... ON CONFLICT DO NOTHING."""
        if info is None:
            return
        insert = sqlite_insert if self.is_sqlite else pg_insert
        s.execute(insert(m.Content).values(
            sha256=sha256, size=info.size, header_size=info.header_size, subject=info.subject,
            envelope=info.envelope, body=info.body, created_at=self.clock.now(),
        ).on_conflict_do_nothing(index_elements=["sha256"]))

    def _mark_delivered(self, s: Session, message_pk: int) -> None:
        # Lock the message first: two jobs of one message filed at the same moment would
        # otherwise each still see the other as pending (READ COMMITTED on PostgreSQL).
        s.execute(select(m.Message.id).where(m.Message.id == message_pk).with_for_update())
        pending = s.scalar(select(func.count()).select_from(m.DeliveryJob).where(
            m.DeliveryJob.message_id == message_pk, m.DeliveryJob.state.in_(("queued", "running"))))
        if not pending:     # a message with a job that failed for good stays "failed"
            s.execute(update(m.Message).where(m.Message.id == message_pk, m.Message.state == "accepted")
                      .values(state="delivered"))

    def fail_job(self, job: Job, error: str, retry_at: dt.datetime | None, audit: AuditEvent) -> None:
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
            return _row(msg) if msg else None


def _row(obj: Any) -> dict:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}

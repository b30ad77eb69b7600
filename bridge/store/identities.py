"""What the front ends look up per login and per recipient: credentials, principals, targets.

Login (SMTP AUTH, IMAP LOGIN, HTTP) reads an account's password hashes
(`credentials`) and then its `Principal`, each with plain Core statements built
once; `record_login` writes the audit event.  Submission classifies and
resolves every RCPT (`domain_kinds`, `resolve`, `corresponded`); the directory
answers are cached for CACHE_SECONDS, so a change made with `dp2bridge` (in
another process) takes effect within that time.  Managing the directory is
directory.py's.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.core.identities import Address, AddressKind, Principal, Target
from bridge.store import models as m
from bridge.store.auditchain import AuditChainMixin

T = TypeVar("T")

CACHE_SECONDS = 2.0

_T = m.Tenant.__table__
_PARTY = m.Party.__table__
_ACCT = m.Account.__table__
_APW = m.AppPassword.__table__
_CP = m.ContactPoint.__table__
_GRANT = m.Grant.__table__

_CREDENTIALS = select(_ACCT.c.id, _ACCT.c.password_hash, _ACCT.c.disabled, _T.c.name, _T.c.disabled) \
    .join(_T, _T.c.id == _ACCT.c.tenant_id).where(_ACCT.c.login == bindparam("login"))
_APP_PASSWORDS = select(_APW.c.id, _APW.c.password_hash).where(
    _APW.c.account_id == bindparam("account_id"), _APW.c.revoked_at.is_(None)).order_by(_APW.c.id)
_PRINCIPAL = select(_ACCT.c.id, _ACCT.c.login, _ACCT.c.display_name, _ACCT.c.role, _T.c.id, _T.c.name,
                    _T.c.kind, _T.c.policy, _PARTY.c.id, _PARTY.c.kind, _PARTY.c.identifier) \
    .join(_T, _T.c.id == _ACCT.c.tenant_id).join(_PARTY, _PARTY.c.id == _ACCT.c.party_id) \
    .where(_ACCT.c.id == bindparam("account_id"))
_GRANTED = select(_CP.c.address).join(_GRANT, _GRANT.c.contact_point_id == _CP.c.id).where(
    _GRANT.c.account_id == bindparam("account_id"))


class IdentitiesMixin(AuditChainMixin):
    """Authentication and recipient lookups of `SqlStore`."""

    # --- authentication ----------------------------------------------------------

    def credentials(self, login: str) -> tuple[int, str, list[tuple[int | None, str]]] | None:
        """(account id, audit chain, [(app password id or None for the main password, hash)]),
        or None when no enabled account of an enabled tenant has this login."""
        with self.ro() as s:
            conn = s.connection()
            row = conn.execute(_CREDENTIALS, {"login": login.lower()}).first()
            if row is None:
                return None
            account_id, password_hash, disabled, chain, tenant_disabled = row
            if disabled or tenant_disabled:
                return None
            hashes: list[tuple[int | None, str]] = [(None, password_hash)] if password_hash else []
            hashes += [(pid, h) for pid, h in conn.execute(_APP_PASSWORDS, {"account_id": account_id})]
            return account_id, chain, hashes

    def record_login(self, app_password_id: int | None, audit: AuditEvent) -> None:
        with self.tx() as s:
            if app_password_id is not None:
                s.execute(update(m.AppPassword).where(m.AppPassword.id == app_password_id)
                          .values(last_used_at=self.clock.now()))
            self._audit(s, audit)

    def principal(self, account_id: int) -> Principal:
        with self.ro() as s:
            conn = s.connection()
            (aid, login, display_name, role, tid, tname, tkind, policy, pid, pkind, pident) = \
                conn.execute(_PRINCIPAL, {"account_id": account_id}).one()
            cps = conn.execute(_GRANTED, {"account_id": aid}).scalars()
            return Principal(
                account_id=aid, login=login, display_name=display_name, role=role,
                tenant_id=tid, tenant_name=tname, tenant_kind=tkind, party_id=pid,
                party_kind=pkind, party_identifier=pident,
                may_address_cpr=tkind == "authority" or bool(policy.get("may_address_cpr")),
                contact_points=frozenset(cps))

    # --- recipients --------------------------------------------------------------

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

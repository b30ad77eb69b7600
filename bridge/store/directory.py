"""The directory as `dp2bridge` manages it: tenants, accounts, app passwords, contact points, grants.

Admin writes and listings of `SqlStore`.  Each write runs in one transaction
that ends with its audit event (auditchain.py); listings return plain dicts.
A new account or contact point gets its standard mailboxes in the same
transaction.  Errors name the `dp2bridge` command that shows what exists.
What the front ends look up per login and per recipient is identities.py's.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.errors import AlreadyExists, NotFound
from bridge.store import models as m
from bridge.store.auditchain import AuditChainMixin

STANDARD_MAILBOXES = (("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                      ("Trash", "\\Trash"), ("Archive", "\\Archive"), ("Receipts", None))


class DirectoryMixin(AuditChainMixin):
    """Tenants, accounts and contact points of `SqlStore`."""

    # --- tenants -----------------------------------------------------------------

    def add_tenant(self, name: str, display_name: str, kind: str, cvr: str | None,
                   domains: list[str], policy: dict[str, Any], audit: AuditEvent) -> None:
        with self.tx() as s:
            if s.scalar(select(m.Tenant).where(m.Tenant.name == name)):
                raise AlreadyExists(f"tenant {name!r} already exists (see `dp2bridge tenant list`)")
            party = self._party(s, "cvr", cvr, display_name) if cvr else None
            holder = party and s.scalar(select(m.Tenant.name).where(m.Tenant.party_id == party.id))
            if holder:
                # One organisation, one tenant: a second one would share its party (its staff
                # would send as that CVR) and a CVR address would reach either of them.
                raise AlreadyExists(f"CVR {cvr} already belongs to tenant {holder!r} "
                                    f"(see `dp2bridge tenant list`)")
            t = m.Tenant(name=name, display_name=display_name, kind=kind, policy=policy,
                         party_id=party.id if party else None, created_at=self.clock.now())
            s.add(t)
            s.flush()
            for d in domains:
                taken = s.get(m.TenantDomain, d)
                if taken:
                    owner = s.get(m.Tenant, taken.tenant_id).name
                    raise AlreadyExists(f"domain {d} already belongs to tenant {owner!r} "
                                        f"(see `dp2bridge tenant list`)")
                s.add(m.TenantDomain(domain=d, tenant_id=t.id))
            self._audit(s, audit)

    def _party(self, s: Session, kind: str, ident: str, name: str) -> m.Party:
        party = s.scalar(select(m.Party).where(m.Party.kind == kind, m.Party.identifier == ident))
        if party is None:
            party = m.Party(kind=kind, identifier=ident, name=name)
            s.add(party)
            s.flush()
        return party

    def system_account(self, tenant: str) -> int:
        """The id of the tenant's (first) system account; NotFound when it has none."""
        with self.ro() as s:
            found = s.scalar(select(m.Account.id).join(m.Tenant, m.Tenant.id == m.Account.tenant_id).where(
                m.Tenant.name == tenant, m.Account.role == "system", m.Account.disabled.is_(False))
                .order_by(m.Account.id).limit(1))
        if found is None:
            raise NotFound(f"tenant {tenant!r} has no system account; add one with "
                           f"`dp2bridge account add system@<its domain> --system`")
        return found

    def set_policy(self, name: str, policy: dict[str, Any], audit: AuditEvent) -> None:
        with self.tx() as s:
            self._get_tenant(s, name).policy = policy
            self._audit(s, audit)

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

    # --- accounts ----------------------------------------------------------------

    def add_account(self, login: str, tenant: str, display_name: str, cpr: str | None,
                    password_hash: str | None, audit: AuditEvent, system: bool = False) -> None:
        with self.tx() as s:
            t = self._get_tenant(s, tenant)
            self._check_address_free(s, login)
            if t.kind == "citizens":
                party, role = self._party(s, "cpr", cpr or "", display_name), "citizen"
                if s.scalar(select(m.Account).where(m.Account.party_id == party.id)):
                    raise AlreadyExists("that CPR number already has an account")
            else:
                party, role = s.get(m.Party, t.party_id), "system" if system else "staff"
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

    def set_disabled(self, login: str, disabled: bool, audit: AuditEvent) -> None:
        with self.tx() as s:
            self._get_account(s, login).disabled = disabled
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

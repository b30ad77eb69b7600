"""Users' S/MIME certificates in the store (issue 5, DESIGN.md section 7).

`CertificateRepository` records certificates issued by a tenant CA or imported
by an admin, revokes them, and answers what the mail path asks: which
certificates of a login mail may be encrypted to now (`valid_for_encryption`),
which a tenant has revoked (`revoked_serials`, `revoked_fingerprints`), and
which account a TLS client certificate of the HTTPS API authenticates
(`account_for_fingerprint`).
Adding, importing and revoking each write their audit event (chain: the
account's tenant) in the same transaction.  Certificates only: private keys
never enter the database.  Serials are lowercase hex without leading zeros,
fingerprints lowercase SHA-256 hex (crypto.usercerts' `serial_hex`, `fingerprint`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.errors import AlreadyExists, NotFound
from bridge.store import models as m

SOURCES = ("issued", "imported")


@dataclass(frozen=True)
class CertOwner:
    """The account a certificate belongs to."""

    login: str
    display_name: str
    tenant: str


@dataclass(frozen=True)
class UserCert:
    login: str
    serial: str
    issuer_fingerprint: str
    fingerprint: str
    pem: str
    not_before: dt.datetime
    not_after: dt.datetime
    source: str
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    created_at: dt.datetime

    def summary(self) -> dict[str, Any]:
        """Everything but the PEM, times as ISO 8601 (for `cert list`)."""
        return {"serial": self.serial, "source": self.source,
                "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "revocation_reason": self.revocation_reason, "fingerprint": self.fingerprint,
                "issuer_fingerprint": self.issuer_fingerprint}


class CertificateRepository:
    """Users' certificates in the SqlStore `store` (its clock dates rows and events)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def owner(self, login: str) -> CertOwner:
        """:raises NotFound: when there is no such account."""
        with self.store.ro() as s:
            account, tenant = self._account(s, login)
            return CertOwner(account.login, account.display_name, tenant)

    def add(self, login: str, *, serial: str, issuer_fingerprint: str, fingerprint: str, pem: str,
            not_before: dt.datetime, not_after: dt.datetime, source: str, actor: str) -> UserCert:
        """Record a certificate of `login` with its `cert.issued` / `cert.imported` event.

        :raises NotFound: when there is no such account.
        :raises AlreadyExists: when the certificate (or its issuer and serial) is recorded.
        :raises ValueError: for a source that is not issued or imported.
        """
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
        with self.store.tx() as s:
            account, tenant = self._account(s, login)
            if s.scalar(select(m.UserCertificate.id).where(
                    (m.UserCertificate.fingerprint == fingerprint)
                    | ((m.UserCertificate.issuer_fingerprint == issuer_fingerprint)
                       & (m.UserCertificate.serial == serial)))) is not None:
                raise AlreadyExists(f"a certificate with serial {serial} of this issuer (or the "
                                    f"same certificate) is recorded already; see "
                                    f"`dp2bridge cert list {account.login}`")
            now = self.store.clock.now()
            row = m.UserCertificate(account_id=account.id, serial=serial,
                                    issuer_fingerprint=issuer_fingerprint, fingerprint=fingerprint,
                                    pem=pem, not_before=not_before, not_after=not_after,
                                    source=source, created_at=now)
            s.add(row)
            s.flush()
            self.store._audit(s, AuditEvent(
                time=now, chain=tenant, kind=f"cert.{source}", result="ok", actor=actor,
                subject=account.login, protocol="cli",
                details={"serial": serial, "fingerprint": fingerprint,
                         "not_after": not_after.isoformat()}))
            return _cert(row, account.login)

    def list_for(self, login: str) -> list[UserCert]:
        """The login's certificates, oldest first.  :raises NotFound: no such account."""
        with self.store.ro() as s:
            account, _ = self._account(s, login)
            rows = s.scalars(select(m.UserCertificate)
                             .where(m.UserCertificate.account_id == account.id)
                             .order_by(m.UserCertificate.created_at, m.UserCertificate.id))
            return [_cert(r, account.login) for r in rows]

    def revoke(self, login: str, serial: str | None, reason: str | None, actor: str) -> list[UserCert]:
        """Revoke the login's certificate with `serial`, or (None) all of them; each with a
        `cert.revoked` event.  Returns those revoked now (none already revoked are).

        :raises NotFound: when there is no such account, or it has no certificate `serial`.
        """
        with self.store.tx() as s:
            account, tenant = self._account(s, login)
            q = select(m.UserCertificate).where(m.UserCertificate.account_id == account.id)
            if serial is not None:
                q = q.where(m.UserCertificate.serial == serial)
            rows = list(s.scalars(q.order_by(m.UserCertificate.id).with_for_update()))
            if serial is not None and not rows:
                raise NotFound(f"{account.login} has no certificate with serial {serial} "
                               f"(see `dp2bridge cert list {account.login}`)")
            now = self.store.clock.now()
            done = []
            for row in rows:
                if row.revoked_at is not None:
                    continue
                row.revoked_at, row.revocation_reason = now, reason
                self.store._audit(s, AuditEvent(
                    time=now, chain=tenant, kind="cert.revoked", result="ok", actor=actor,
                    subject=account.login, protocol="cli",
                    details={"serial": row.serial, "fingerprint": row.fingerprint,
                             "reason": reason}))
                done.append(_cert(row, account.login))
            return done

    def revocations(self, tenant: str, issuer_fingerprint: str) -> list[tuple[str, dt.datetime, str | None]]:
        """(serial, revoked at, reason) of the tenant's revoked certificates from one issuer:
        the entries of that CA's CRL."""
        with self.store.ro() as s:
            rows = s.execute(self._revoked(tenant).add_columns(
                m.UserCertificate.revoked_at, m.UserCertificate.revocation_reason)
                .where(m.UserCertificate.issuer_fingerprint == issuer_fingerprint)
                .order_by(m.UserCertificate.revoked_at, m.UserCertificate.id))
            return [(r.serial, r.revoked_at, r.revocation_reason) for r in rows]

    def revoked_serials(self, tenant: str) -> set[tuple[str, str]]:
        """(issuer fingerprint, serial) of every revoked certificate of the tenant's users.
        A signer certificate is revoked when (SHA-256 hex of its issuing CA certificate,
        `format(serial_number, "x")`) is in this set."""
        with self.store.ro() as s:
            return {(r.issuer_fingerprint, r.serial) for r in s.execute(self._revoked(tenant))}

    def revoked_fingerprints(self, tenant: str) -> set[str]:
        """SHA-256 hex fingerprints of the tenant's revoked certificates, including imported
        ones whose issuer the bridge does not know."""
        with self.store.ro() as s:
            return {r.fingerprint for r in s.execute(self._revoked(tenant))}

    def valid_for_encryption(self, login: str, now: dt.datetime) -> list[bytes]:
        """PEMs (bytes, as crypto.smime's `encrypt_smime` takes them) of the login's
        certificates mail may be encrypted to at `now`: not revoked, within validity, RSA
        with keyEncipherment allowed; newest first.  An unknown login has none."""
        from bridge.crypto.usercerts import can_encrypt_to
        c = m.UserCertificate
        with self.store.ro() as s:
            pems = list(s.scalars(
                select(c.pem).join(m.Account, m.Account.id == c.account_id)
                .where(m.Account.login == login.strip().lower(), c.revoked_at.is_(None),
                       c.not_before <= now, c.not_after >= now)
                .order_by(c.created_at.desc(), c.id.desc())))
        return [pem.encode("ascii") for pem in pems if can_encrypt_to(pem)]

    def account_for_fingerprint(self, fp: str) -> int | None:
        """The id of the account a TLS client certificate with SHA-256 fingerprint `fp`
        (lowercase hex) authenticates: recorded for it, not revoked, valid now (store clock),
        account and tenant enabled.  None otherwise, whatever the reason."""
        c = m.UserCertificate
        now = self.store.clock.now()
        with self.store.ro() as s:
            return s.scalar(
                select(c.account_id).join(m.Account, m.Account.id == c.account_id)
                .join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
                .where(c.fingerprint == fp.strip().lower(), c.revoked_at.is_(None),
                       c.not_before <= now, c.not_after >= now,
                       m.Account.disabled.is_(False), m.Tenant.disabled.is_(False)))

    @staticmethod
    def _revoked(tenant: str) -> Any:
        c = m.UserCertificate
        return (select(c.serial, c.issuer_fingerprint, c.fingerprint)
                .join(m.Account, m.Account.id == c.account_id)
                .join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
                .where(m.Tenant.name == tenant, c.revoked_at.is_not(None)))

    @staticmethod
    def _account(s: Session, login: str) -> tuple[m.Account, str]:
        row = s.execute(select(m.Account, m.Tenant.name)
                        .join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
                        .where(m.Account.login == login.strip().lower())).first()
        if row is None:
            raise NotFound(f"no account {login.strip().lower()} (see `dp2bridge account list`)")
        return row[0], row[1]


def _cert(row: m.UserCertificate, login: str) -> UserCert:
    return UserCert(login=login, serial=row.serial, issuer_fingerprint=row.issuer_fingerprint,
                    fingerprint=row.fingerprint, pem=row.pem, not_before=row.not_before,
                    not_after=row.not_after, source=row.source, revoked_at=row.revoked_at,
                    revocation_reason=row.revocation_reason, created_at=row.created_at)

"""HTTP API bearer tokens in the store (issue 6): made, listed, revoked, checked.

A token is `dp2_` + 32 random bytes in URL-safe base64, printed once by
`dp2bridge token add`; only its SHA-256 (hex) is stored, so the database alone
gives no usable token.  `account_for` finds the account of a presented token
(not revoked, account and tenant enabled) and records when it was last used.
Adding and revoking write their audit event (chain: the account's tenant) in
the same transaction.  Tokens are named per account (`name`), like app
passwords; a revoked name may be used again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.core.audit import AuditEvent
from bridge.errors import AdminError, AlreadyExists, NotFound
from bridge.store import models as m

PREFIX = "dp2_"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# last_used_at is written at most this often per token (not on every request).
TOUCH_SECONDS = 60


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenOwner:
    """The account a valid token belongs to."""

    account_id: int
    login: str
    tenant: str
    name: str


class TokenRepository:
    """API tokens in the SqlStore `store` (its clock dates rows and events)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def add(self, login: str, name: str, actor: str) -> str:
        """A new token for `login`, returned (the only time it exists in clear).

        :raises NotFound: no such account.
        :raises AlreadyExists: the account has a token `name` that is not revoked.
        :raises AdminError: `name` is not a short label.
        """
        name = name.strip().lower()
        if not NAME_RE.match(name):
            raise AdminError("a token name is a short label like 'esdh' or 'print-1' "
                             "(letters, digits, '.', '_', '-')")
        token = PREFIX + secrets.token_urlsafe(32)
        with self.store.tx() as s:
            account, tenant = _account(s, login)
            if s.scalar(select(m.ApiToken.id).where(m.ApiToken.account_id == account.id,
                                                    m.ApiToken.name == name,
                                                    m.ApiToken.revoked_at.is_(None))) is not None:
                raise AlreadyExists(f"{account.login} already has a token named {name!r}; revoke "
                                    f"it first (`dp2bridge token revoke {account.login} {name}`) "
                                    f"or choose another name")
            now = self.store.clock.now()
            s.add(m.ApiToken(account_id=account.id, name=name, token_hash=token_hash(token),
                             created_at=now))
            s.flush()
            self.store._audit(s, AuditEvent(time=now, chain=tenant, kind="api-token.added", result="ok",
                                            actor=actor, subject=account.login, protocol="cli",
                                            details={"name": name}))
        return token

    def list(self, login: str | None = None) -> list[dict]:
        """Tokens (never the tokens themselves) of `login`, or of every account, oldest first.
        :raises NotFound: no such account."""
        t = m.ApiToken
        q = (select(t, m.Account.login, m.Tenant.name).join(m.Account, m.Account.id == t.account_id)
             .join(m.Tenant, m.Tenant.id == m.Account.tenant_id).order_by(t.created_at, t.id))
        with self.store.ro() as s:
            if login is not None:
                account, _ = _account(s, login)
                q = q.where(t.account_id == account.id)
            return [{"login": lg, "tenant": tenant, "name": row.name,
                     "created_at": _iso(row.created_at), "last_used_at": _iso(row.last_used_at),
                     "revoked_at": _iso(row.revoked_at)} for row, lg, tenant in s.execute(q)]

    def revoke(self, login: str, name: str, actor: str) -> None:
        """Revoke the account's token `name`; it stops working at once.
        :raises NotFound: no such account, or no such token that is not revoked."""
        name = name.strip().lower()
        with self.store.tx() as s:
            account, tenant = _account(s, login)
            row = s.scalar(select(m.ApiToken).where(m.ApiToken.account_id == account.id,
                                                    m.ApiToken.name == name,
                                                    m.ApiToken.revoked_at.is_(None)).with_for_update())
            if row is None:
                raise NotFound(f"{account.login} has no token named {name!r} that is not revoked "
                               f"(see `dp2bridge token list {account.login}`)")
            now = self.store.clock.now()
            row.revoked_at = now
            self.store._audit(s, AuditEvent(time=now, chain=tenant, kind="api-token.revoked", result="ok",
                                            actor=actor, subject=account.login, protocol="cli",
                                            details={"name": name}))

    def account_for(self, token: str) -> TokenOwner | None:
        """The owner of a valid `token`, else None (malformed, unknown, revoked, account or
        tenant disabled: all the same to the caller)."""
        if not token.startswith(PREFIX) or len(token) > 128:
            return None
        digest = token_hash(token)
        t = m.ApiToken
        q = (select(t.id, t.token_hash, t.name, t.last_used_at, m.Account.id, m.Account.login,
                    m.Account.disabled, m.Tenant.name, m.Tenant.disabled)
             .join(m.Account, m.Account.id == t.account_id).join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
             .where(t.token_hash == digest, t.revoked_at.is_(None)))
        with self.store.ro() as s:
            row = s.execute(q).first()
        if row is None or not hmac.compare_digest(row[1], digest) or row[6] or row[8]:
            return None
        now = self.store.clock.now()
        if row[3] is None or now - row[3] > dt.timedelta(seconds=TOUCH_SECONDS):
            with self.store.tx() as s:
                s.execute(update(t).where(t.id == row[0]).values(last_used_at=now))
        return TokenOwner(account_id=row[4], login=row[5], tenant=row[7], name=row[2])


def _account(s: Session, login: str) -> tuple[m.Account, str]:
    row = s.execute(select(m.Account, m.Tenant.name).join(m.Tenant, m.Tenant.id == m.Account.tenant_id)
                    .where(m.Account.login == login.strip().lower())).first()
    if row is None:
        raise NotFound(f"no account {login.strip().lower()} (see `dp2bridge account list`)")
    return row[0], row[1]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None

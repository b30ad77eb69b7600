"""Administration use cases: tenants, accounts, app passwords, contact points and grants.

Validates input (kinds, CPR/CVR formats, addresses, domains), hashes secrets
and records an audit event in the same transaction as each change.  The CLI
(admin/) parses arguments and prints; it calls only these functions.  Errors
are AdminError with a text that says what was wrong and what to do.
"""

from __future__ import annotations

import re
from typing import Any

from bridge.clock import Clock
from bridge.core.audit import AuditEvent
from bridge.core.identities import CPR_RE, CVR_RE, TENANT_KINDS
from bridge.crypto.passwords import generate_password, hash_password
from bridge.errors import AdminError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


# Tenant policy keys `dp2bridge tenant policy` may set, and their types.
POLICY_KEYS: dict[str, type | tuple[str, ...]] = {
    "may_address_cpr": bool,                # a company may address citizens by CPR
    "default_contact_point": str,           # where a CVR address is delivered
    "handling_names_caseworker": bool,      # HandlingStarted receipts name the caseworker
    "user_cert_days": int,                  # validity of S/MIME certificates `cert issue` makes
    "encrypt_at_rest": ("never", "when-possible", "required"),   # copies encrypted to their owner
    "require_signed_encryption": bool,      # open S/MIME (CBC) submissions only when signed inside
}
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}


class Admin:
    def __init__(self, store: Any, clock: Clock, actor: str) -> None:
        self.store, self.clock, self.actor = store, clock, actor

    def _event(self, chain: str, kind: str, subject: str, **details: Any) -> AuditEvent:
        return AuditEvent(time=self.clock.now(), chain=chain, kind=kind, result="ok", actor=self.actor,
                          subject=subject, protocol="cli", details=details)

    def _tenant_of(self, address: str) -> str:
        return self._tenant_record(address)["name"]

    def _tenant_record(self, address: str) -> dict[str, Any]:
        domain = address.strip().lower().rpartition("@")[2]
        for t in self.store.tenants():
            if domain in t["domains"]:
                return t
        raise AdminError(f"{domain} is not a domain of any tenant "
                         f"(see `dp2bridge tenant list`; add it with `tenant add ... --domain`)")

    # --- tenants ---------------------------------------------------------------------

    def add_tenant(self, name: str, display_name: str, kind: str, cvr: str | None,
                   domains: list[str], may_address_cpr: bool = False) -> None:
        if not _NAME_RE.match(name):
            raise AdminError(f"tenant name {name!r} must be lowercase a-z letters, digits and '-' "
                             f"(no æ, ø, å: e.g. 'soeborg')")
        if kind not in TENANT_KINDS:
            raise AdminError(f"unknown tenant kind {kind!r}: give --kind one of {', '.join(TENANT_KINDS)}")
        if kind == "citizens" and cvr:
            raise AdminError("a citizens tenant has no CVR number; leave out --cvr")
        if kind != "citizens" and not cvr:
            raise AdminError(f"{kind} tenants need --cvr with their 8-digit CVR number")
        if cvr and not CVR_RE.match(cvr):
            raise AdminError(f"--cvr {cvr!r} is not a CVR number: give its 8 digits, e.g. 29190000")
        domains = list(dict.fromkeys(check_domain(d) for d in domains))
        if not domains:
            raise AdminError("give at least one mail domain with --domain")
        policy = {"may_address_cpr": True} if may_address_cpr else {}
        self.store.add_tenant(name, display_name, kind, cvr, domains, policy,
                              self._event(name, "tenant.added", name, tenant_kind=kind, domains=domains))

    def set_policy(self, name: str, changes: dict[str, str]) -> dict[str, Any]:
        """Set (or with an empty value, unset) tenant policy keys; returns the new policy."""
        policy = dict(self.store.tenant(name)["policy"] or {})
        for key, text in changes.items():
            kind = POLICY_KEYS.get(key)
            if kind is None:
                raise AdminError(f"unknown policy key {key!r}; known keys: {', '.join(sorted(POLICY_KEYS))}")
            if text == "":
                policy.pop(key, None)
            elif kind is bool:
                if text.lower() not in _BOOLEANS:
                    raise AdminError(f"{key} takes true or false, not {text!r}")
                policy[key] = _BOOLEANS[text.lower()]
            elif kind is int:
                if not text.isdigit() or not 1 <= int(text) <= 3650:
                    raise AdminError(f"{key} takes a number of days from 1 to 3650, not {text!r}")
                policy[key] = int(text)
            elif isinstance(kind, tuple):
                if text.strip().lower() not in kind:
                    raise AdminError(f"{key} takes one of {', '.join(kind)}, not {text!r}")
                policy[key] = text.strip().lower()
            else:
                policy[key] = text.strip().lower()
        self.store.set_policy(name, policy, self._event(name, "tenant.policy", name, policy=policy))
        return policy

    # --- read-status consent -------------------------------------------------------

    def consent(self, citizen: str, sender: str, given: bool) -> tuple[bool, str]:
        """Grant or revoke a citizen's standing consent that `sender` (a tenant name, CVR or
        address) learns when they read its letters.  Returns (changed, sender's name)."""
        from bridge.store.receipts import ConsentRepository
        repo = ConsentRepository(self.store)
        citizen_party, chain = repo.party_of_citizen(citizen)
        sender_party, label = repo.party_of_sender(sender)
        event = self._event(chain, "consent.granted" if given else "consent.revoked", citizen.strip().lower(),
                            sender=sender.strip().lower())
        changed = (repo.grant if given else repo.revoke)(citizen_party, sender_party, event)
        return changed, label

    def consents(self, citizen: str | None) -> list[dict]:
        from bridge.store.receipts import ConsentRepository
        repo = ConsentRepository(self.store)
        return repo.list(repo.party_of_citizen(citizen)[0] if citizen else None)

    # --- accounts --------------------------------------------------------------------

    def add_account(self, login: str, display_name: str, cpr: str | None,
                    password: str | None, system: bool = False) -> str | None:
        """Create the account; returns a generated password when none was given.  A system
        account (`system`) is how a tenant's own systems submit MeMo messages (drop folder,
        HTTP API); it belongs to an authority or company."""
        login = check_address(login)
        record = self._tenant_record(login)
        tenant, kind = record["name"], record["kind"]
        if kind == "citizens" and not cpr:
            raise AdminError("citizen accounts need --cpr with the citizen's 10-digit CPR number")
        if kind == "citizens" and not CPR_RE.match(cpr or ""):
            raise AdminError(f"--cpr {cpr!r} is not a CPR number: give its 10 digits without '-', "
                             f"e.g. 0101701234")
        if kind != "citizens" and cpr:
            article = "an" if kind[:1] in "aeiou" else "a"
            raise AdminError(f"{login} is staff of {article} {kind}; only citizens have --cpr")
        if system and kind == "citizens":
            raise AdminError("a system account belongs to an authority or a company, not to citizens")
        generated = None
        if password is None:
            generated = password = generate_password()
        check_password(password)
        self.store.add_account(login, tenant, display_name, cpr, hash_password(password),
                               self._event(tenant, "account.added", login, **({"role": "system"} if system else {})),
                               system=system)
        return generated

    def set_password(self, login: str, password: str) -> None:
        check_password(password)
        login = login.strip().lower()
        self.store.set_password(login, hash_password(password),
                                self._event(self._tenant_of(login), "account.password", login))

    def set_disabled(self, login: str, disabled: bool) -> None:
        """A disabled account cannot log in or receive; its mail stays.  Messages accepted for
        it but not yet filed fail (the sender gets a ContentConsignmentFailure receipt)."""
        login = login.strip().lower()
        self.store.set_disabled(login, disabled, self._event(
            self._tenant_of(login), "account.disabled" if disabled else "account.enabled", login))

    def add_app_password(self, login: str, name: str) -> str:
        if not _NAME_RE.match(name.lower()):
            raise AdminError("an app password name is a short label like 'thunderbird' or 'phone'")
        secret = generate_password()
        login = login.strip().lower()
        self.store.add_app_password(login, name.lower(), hash_password(secret),
                                    self._event(self._tenant_of(login), "app-password.added", login,
                                                name=name.lower()))
        return secret

    def revoke_app_password(self, login: str, name: str) -> None:
        login = login.strip().lower()
        self.store.revoke_app_password(login, name.lower(), self._event(
            self._tenant_of(login), "app-password.revoked", login, name=name.lower()))

    # --- contact points --------------------------------------------------------------

    def add_contact_point(self, address: str, name: str) -> str:
        """Create the contact point; returns its normalised address."""
        address = check_address(address)
        record = self._tenant_record(address)
        if record["kind"] == "citizens":
            raise AdminError(f"{address} is in the citizens tenant {record['name']}; contact points "
                             f"belong to authorities and companies")
        if not name.strip():
            raise AdminError("give the contact point a name with --name, e.g. --name Jobcenter")
        tenant = record["name"]
        self.store.add_contact_point(address, tenant, name.strip(),
                                     self._event(tenant, "contact-point.added", address, name=name.strip()))
        return address

    def grant(self, address: str, login: str) -> None:
        address, login = address.strip().lower(), login.strip().lower()
        self.store.grant(address, login, self._event(self._tenant_of(address), "contact-point.granted",
                                                     address, account=login))

    def revoke(self, address: str, login: str) -> None:
        address, login = address.strip().lower(), login.strip().lower()
        self.store.revoke(address, login, self._event(self._tenant_of(address), "contact-point.revoked",
                                                      address, account=login))


def check_domain(domain: str) -> str:
    d = domain.strip().lower().rstrip(".")
    if not _DOMAIN_RE.match(d):
        raise AdminError(f"{domain!r} is not a domain name like kommune.example.dk")
    return d


def check_address(address: str) -> str:
    a = address.strip().lower()
    local, sep, domain = a.rpartition("@")
    if not sep or not _LOCAL_RE.match(local):
        raise AdminError(f"{address!r} is not a mail address like name@kommune.example.dk")
    return f"{local}@{check_domain(domain)}"


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AdminError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AdminError(f"the password is too long: use at most {MAX_PASSWORD} characters")
    if any(ord(c) < 32 for c in password):
        raise AdminError("the password contains control characters (a stray newline?)")

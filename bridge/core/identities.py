"""Identities and the addressing policy (DESIGN.md section 3).

Owns: the authenticated Principal, resolved recipients (Target), the
classification of an address (directory CPR/CVR, local, foreign) and the
sending rules.  The rules are pure functions over these value objects; the
store resolves addresses, core decides.  Imports no protocol or storage library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from bridge.errors import (ForeignDomain, RecipientNotAllowed, SenderNotAllowed,
                           UnknownRecipient)

CPR_RE = re.compile(r"^[0-9]{10}$")
CVR_RE = re.compile(r"^[0-9]{8}$")
TENANT_KINDS = ("authority", "company", "citizens")


@dataclass(frozen=True)
class Principal:
    """An authenticated account, with what it may send as."""

    account_id: int
    login: str
    display_name: str
    role: str                      # citizen | staff | system
    tenant_id: int
    tenant_name: str
    tenant_kind: str               # authority | company | citizens
    party_id: int
    party_kind: str                # cpr | cvr
    party_identifier: str
    may_address_cpr: bool          # authority tenants, or a tenant policy allowing it
    contact_points: frozenset[str]  # addresses of contact points this account is granted

    @property
    def sender_addresses(self) -> frozenset[str]:
        return self.contact_points | {self.login}

    @property
    def is_citizen(self) -> bool:
        return self.tenant_kind == "citizens"


@dataclass(frozen=True)
class Target:
    """A resolved recipient: the mailbox owner a delivery job fills."""

    kind: str                      # account | contact_point
    id: int
    address: str                   # the owner's own address (login or contact point address)
    tenant_id: int
    tenant_kind: str
    party_id: int
    is_citizen: bool


class AddressKind(Enum):
    CPR = "cpr"            # <cpr>@cpr.<directory domain>
    CVR = "cvr"            # <cvr>@cvr.<directory domain>
    LOCAL = "local"        # a domain of one of our tenants
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Address:
    text: str              # lowercased addr-spec
    local: str
    domain: str
    kind: AddressKind
    domain_tenant_kind: str | None = None   # for LOCAL: kind of the tenant owning the domain


def split_address(addr: str) -> tuple[str, str]:
    local, sep, domain = addr.strip().rpartition("@")
    if not sep or not local or not domain:
        raise UnknownRecipient(f"not an address: {addr!r}", public="that is not a mail address")
    return local, domain.lower().rstrip(".")


def classify(addr: str, directory_domain: str, domain_kind: dict[str, str]) -> Address:
    """Classify an address. `domain_kind` maps each local mail domain to its tenant's kind."""
    local, domain = split_address(addr)
    text = f"{local.lower()}@{domain}"
    if domain == f"cpr.{directory_domain}":
        return Address(text, local, domain, AddressKind.CPR)
    if domain == f"cvr.{directory_domain}":
        return Address(text, local, domain, AddressKind.CVR)
    if domain in domain_kind:
        return Address(text, local.lower(), domain, AddressKind.LOCAL, domain_kind[domain])
    return Address(text, local, domain, AddressKind.FOREIGN)


def check_sender(principal: Principal, address: str) -> str:
    """The lowercased address if `principal` may send as it; raises SenderNotAllowed."""
    norm = address.strip().lower()
    if norm not in principal.sender_addresses:
        raise SenderNotAllowed(f"{principal.login} tried to send as {norm}")
    return norm


def precheck_recipient(principal: Principal, address: Address) -> None:
    """Rules that hold whether or not the address exists, so a refusal reveals nothing.

    Raises RecipientNotAllowed or ForeignDomain.
    """
    if address.kind is AddressKind.FOREIGN:
        raise ForeignDomain(f"foreign domain {address.domain}")
    if address.kind is AddressKind.CPR:
        if not principal.may_address_cpr:
            raise RecipientNotAllowed(
                f"{principal.login} may not address by CPR",
                public="you may not address citizens by CPR number")
        if not CPR_RE.match(address.local):
            raise UnknownRecipient(f"bad CPR {address.local!r}",
                                   public="a CPR address is the 10-digit CPR number")
    if address.kind is AddressKind.CVR:
        if principal.is_citizen:
            raise RecipientNotAllowed(
                "citizen addressing by CVR",
                public="citizens write to an authority's contact point, not to a CVR number")
        if not CVR_RE.match(address.local):
            raise UnknownRecipient(f"bad CVR {address.local!r}",
                                   public="a CVR address is the 8-digit CVR number")
    if address.kind is AddressKind.LOCAL and address.domain_tenant_kind == "citizens" \
            and not principal.may_address_cpr and principal.tenant_kind != "authority":
        raise RecipientNotAllowed(
            f"{principal.login} addressing citizen mailbox {address.text}",
            public="you may not write directly to a citizen; use the contact point you were written from")


NOT_A_CONTACT_POINT = ("no contact point has this address; write to a contact point, "
                       "or reply to a letter you received")


def check_target(principal: Principal, target: Target | None, address: Address,
                 corresponded: bool) -> Target:
    """Rules for a resolved recipient (None: no such address).  `corresponded`: the principal
    has received mail from this target's address (a reply in a thread they are part of)."""
    if target is not None and (target.kind == "contact_point" or principal.tenant_kind == "authority"):
        return target
    if target is not None and target.is_citizen and not principal.may_address_cpr:
        raise RecipientNotAllowed(f"{principal.login} -> citizen {address.text}")
    restricted = principal.is_citizen or (
        principal.tenant_kind == "company" and address.domain_tenant_kind == "authority")
    if restricted and not corresponded:
        # The same answer whether or not a staff login exists, so logins cannot be probed.
        raise UnknownRecipient(f"{principal.login} -> {address.text}: no correspondence "
                               f"({'exists' if target else 'unknown'})", public=NOT_A_CONTACT_POINT)
    if target is None:
        raise UnknownRecipient(f"unknown recipient {address.text}")
    return target

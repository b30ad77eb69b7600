"""Value objects for messages moving through the bridge.  Pure: no I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Submission:
    """A message accepted from a client, as the store records it."""

    uuid: str
    message_id: str
    thread_id: str
    in_reply_to: str | None
    tenant_id: int
    sender_account_id: int
    sender_party_id: int
    from_address: str
    subject: str | None
    sha256: str
    size: int
    internal_date: dt.datetime
    origin: str                      # smtp | imap-append | memo
    session_id: str | None
    memo: dict[str, Any] = field(default_factory=dict)
    auth: list[dict[str, Any]] = field(default_factory=list)   # signature results (crypto.results)


@dataclass(frozen=True)
class Job:
    """A claimed delivery job with what the worker needs to file it."""

    id: int
    kind: str                        # inbox | sent
    recipient: str                   # address as given at RCPT
    lease_token: str
    attempts: int
    message_pk: int
    message_uuid: str
    sha256: str
    tenant_name: str
    from_address: str
    sender_login: str | None
    sender_party: str | None         # "cvr:12345678" / "cpr:0101701234"
    sender_tenant_kind: str
    owner_kind: str                  # account | contact_point
    owner_id: int
    owner_address: str               # the address the owner sees as its own
    owner_chain: str                 # tenant name of the recipient (audit chain)
    owner_tenant_kind: str
    owner_disabled: bool = False     # the recipient's account was disabled after acceptance
    auth: list[dict[str, Any]] = field(default_factory=list)   # signature results at submission
    keywords: tuple[str, ...] = ()   # IMAP keywords of the recipient's copy (MeMo: $Mandatory, ...)


@dataclass(frozen=True)
class Filed:
    """A message filed into a mailbox: enough for IDLE notifications."""

    mailbox_id: int
    uid: int
    modseq: int
    message_uuid: str

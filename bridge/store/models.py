"""SQLAlchemy 2 models: the whole persistent state except message bytes (see blobs.py).

The same models run on SQLite (embedded default) and PostgreSQL; Alembic
migrations under store/migrations/ create them (tests check the migrations and
these models agree).  Only store/ imports this module.

Layout in short:
  tenants -> tenant_domains, accounts, contact_points; parties are legal identities (CPR/CVR)
  accounts -> app_passwords; contact_points <-> accounts via grants
  mailboxes belong to exactly one account or one contact point
  contents: one row per distinct blob (SHA-256), with the envelope and body structure
            computed once at delivery (IMAP FETCH never re-parses)
  messages: one row per accepted submission (UUID, Message-ID, thread, MeMo fields)
  mailbox_entries: a message filed in a mailbox (UID, flags, keywords, MODSEQ)
  expunged: UIDs removed from a mailbox with the MODSEQ of their removal (QRESYNC VANISHED)
  delivery_jobs: the durable queue; audit_events + audit_heads: per-tenant hash chains
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index,
                        Integer, String, Text, TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python, naive UTC in the database (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use Clock.now()")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)          # slug, e.g. "kommune"
    display_name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))                       # authority|company|citizens
    party_id: Mapped[int | None] = mapped_column(ForeignKey("parties.id"))  # the CVR party
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    __table_args__ = (CheckConstraint("kind IN ('authority','company','citizens')", name="tenant_kind"),)


class TenantDomain(Base):
    __tablename__ = "tenant_domains"
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)


class Party(Base):
    """A legal identity Digital Post knows: a citizen (cpr) or a firm/authority (cvr)."""

    __tablename__ = "parties"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))                        # cpr|cvr
    identifier: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256), default="")
    __table_args__ = (UniqueConstraint("kind", "identifier"),
                      CheckConstraint("kind IN ('cpr','cvr')", name="party_kind"))


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    login: Mapped[str] = mapped_column(String(320), unique=True)       # lowercased address
    party_id: Mapped[int] = mapped_column(ForeignKey("parties.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(16))                       # citizen|staff|system
    password_hash: Mapped[str | None] = mapped_column(String(256))      # argon2id
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]


class AppPassword(Base):
    __tablename__ = "app_passwords"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(256))             # argon2id
    created_at: Mapped[dt.datetime]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class ContactPoint(Base):
    __tablename__ = "contact_points"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime]


class Grant(Base):
    __tablename__ = "grants"
    contact_point_id: Mapped[int] = mapped_column(ForeignKey("contact_points.id"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True, index=True)
    created_at: Mapped[dt.datetime]


class Mailbox(Base):
    __tablename__ = "mailboxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    contact_point_id: Mapped[int | None] = mapped_column(ForeignKey("contact_points.id"))
    name: Mapped[str] = mapped_column(String(512))                      # "INBOX", "Sent", "a/b"
    special_use: Mapped[str | None] = mapped_column(String(32))         # "\\Sent", ...
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime]
    __table_args__ = (
        UniqueConstraint("account_id", "name"), UniqueConstraint("contact_point_id", "name"),
        CheckConstraint("(account_id IS NULL) <> (contact_point_id IS NULL)", name="mailbox_one_owner"),
    )


class Content(Base):
    """One distinct blob: its size and what IMAP needs without re-parsing it."""

    __tablename__ = "contents"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    header_size: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(Text)
    envelope: Mapped[list[Any]] = mapped_column(JSON)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)         # MeMo messageUUID (v4)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(998), index=True)   # RFC 5322 Message-ID
    thread_id: Mapped[str] = mapped_column(String(36), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    sender_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    sender_party_id: Mapped[int | None] = mapped_column(ForeignKey("parties.id"))
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))                     # the blob exactly as accepted
    size: Mapped[int] = mapped_column(BigInteger)
    internal_date: Mapped[dt.datetime]
    origin: Mapped[str] = mapped_column(String(16))                     # smtp|imap-append|memo
    session_id: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="accepted")  # accepted|delivered|failed
    memo: Mapped[dict[str, Any]] = mapped_column(default=dict)          # MeMo fields (later issues)
    # What the bridge verified at submission, e.g. [{"method": "smime", "status": "pass",
    # "signer": ..., "reason": ...}]: stated in each copy's Authentication-Results, and in receipts.
    auth: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    __table_args__ = (Index("ix_messages_sender_msgid", "sender_account_id", "message_id"),)


class MailboxEntry(Base):
    __tablename__ = "mailbox_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"))
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("contents.sha256"))  # the copy this mailbox shows
    flags: Mapped[str] = mapped_column(String(256), default="")         # space-separated system flags
    keywords: Mapped[str] = mapped_column(Text, default="")             # space-separated keywords
    modseq: Mapped[int] = mapped_column(BigInteger)
    internal_date: Mapped[dt.datetime]
    __table_args__ = (UniqueConstraint("mailbox_id", "uid"), Index("ix_mailbox_entries_modseq", "mailbox_id", "modseq"), Index("ix_mailbox_entries_keywords", "mailbox_id", sqlite_where=keywords.column != "", postgresql_where=keywords.column != ""))


class Expunged(Base):
    """A UID expunged from a mailbox and the MODSEQ of its expunge, so that QRESYNC
    (RFC 7162 section 3.2.5) can answer VANISHED (EARLIER) for UIDs a client last saw."""

    __tablename__ = "expunged"
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_expunged_modseq", "mailbox_id", "modseq"),)


class DeliveryJob(Base):
    __tablename__ = "delivery_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))                       # inbox|sent
    recipient: Mapped[str] = mapped_column(String(320))                 # address as given
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    contact_point_id: Mapped[int | None] = mapped_column(ForeignKey("contact_points.id"))
    state: Mapped[str] = mapped_column(String(16), default="queued")    # queued|running|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    done_at: Mapped[dt.datetime | None]
    __table_args__ = (Index("ix_delivery_jobs_ready", "state", "next_attempt_at"),)


class AuditEvent(Base):
    """Append-only: nothing updates or deletes a row.  hash = SHA-256(prev_hash || canonical JSON)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))                      # tenant name, or "_system"
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(64))
    message_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    actor: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(320))
    protocol: Mapped[str | None] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    __table_args__ = (UniqueConstraint("chain", "seq"),)


class AuditHead(Base):
    """The newest link of each chain; locked while appending so the chain stays linear."""

    __tablename__ = "audit_heads"
    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Receipt(Base):
    """A receipt owed for one event of one message (issue 4, DESIGN.md section 5).

    Written in the transaction of the event it attests (with that event's audit link);
    the receipt worker then signs it and files it in the owner's Receipts mailbox.  The
    unique (message, event, recipient) key makes a second receipt for one event
    impossible, whoever asks for it."""

    __tablename__ = "receipts"
    id: Mapped[int] = mapped_column(primary_key=True)
    evidence_id: Mapped[str] = mapped_column(String(36), unique=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))      # the message attested
    event: Mapped[str] = mapped_column(String(32))                          # ETSI EN 319 522 name
    recipient: Mapped[str] = mapped_column(String(320), default="")         # "" when not per recipient
    owner_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))  # whose Receipts mailbox
    audit_chain: Mapped[str] = mapped_column(String(64))                    # the attested event's link;
    audit_seq: Mapped[int] = mapped_column(BigInteger)                      # its chain's tenant signs
    audit_hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[dt.datetime]                                               # of the attested event
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")        # queued|running|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    filed_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[dt.datetime]
    __table_args__ = (UniqueConstraint("message_id", "event", "recipient"),
                      Index("ix_receipts_ready", "state", "next_attempt_at"))


class Consent(Base):
    """A citizen's standing consent that a sender (party) may learn when they read its letters."""

    __tablename__ = "consents"
    citizen_party_id: Mapped[int] = mapped_column(ForeignKey("parties.id"), primary_key=True)
    sender_party_id: Mapped[int] = mapped_column(ForeignKey("parties.id"), primary_key=True)
    created_at: Mapped[dt.datetime]


class UserCertificate(Base):
    """An account's S/MIME certificate (issue 5, DESIGN.md section 7): issued by its tenant CA
    (`dp2bridge cert issue`) or the user's own (`cert import`), for verifying their
    signatures and encrypting to them.  Only the certificate: private keys never enter
    the database.  Revocation sets revoked_at; nothing deletes a row."""

    __tablename__ = "user_certificates"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    serial: Mapped[str] = mapped_column(String(128))                    # lowercase hex
    issuer_fingerprint: Mapped[str] = mapped_column(String(64))         # SHA-256 of the CA, or ""
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)   # SHA-256 of the DER
    pem: Mapped[str] = mapped_column(Text)
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    source: Mapped[str] = mapped_column(String(8))                      # issued|imported
    revoked_at: Mapped[dt.datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    __table_args__ = (UniqueConstraint("issuer_fingerprint", "serial"),
                      CheckConstraint("source IN ('issued','imported')", name="user_cert_source"))


class ApiToken(Base):
    """A bearer token for the HTTP API (issue 6): `dp2bridge token add LOGIN` prints it once.
    Only its SHA-256 is stored; revocation sets revoked_at, nothing deletes a row."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)    # SHA-256 hex of the token
    created_at: Mapped[dt.datetime]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class Notification(Base):
    """A notice handed to a notification channel instead of a mailbox (issue 6: a MeMo of
    messageType NEMSMS).  For now the outbox is this table and the log; a channel that
    sends them (SMS, push) takes queued rows later (DESIGN.md section 11)."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)   # the sender's
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))                    # nemsms
    recipient: Mapped[str] = mapped_column(String(320))                 # address as given
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="queued")    # queued|sent|failed
    created_at: Mapped[dt.datetime]

"""Use cases the front ends and the CLI call: authenticate, check addresses, submit.

Methods here are synchronous and do blocking work (argon2, fsync, SQL); the
asyncio front ends run them in a worker thread (`bridge.app.run_blocking`).
Every refusal is a BridgeError carrying its client-safe text; every accepted,
refused and failed action leaves an audit event.  Imports no protocol or
storage library: the store, blob store and clock arrive as arguments.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from bridge.clock import Clock
from bridge.core import identities as ids
from bridge.core.audit import SYSTEM_CHAIN, AuditEvent
from bridge.core.memoview import carries_memo_fields, memo_rules, submitted_memo_fields, thread_scope
from bridge.core.messages import Submission
from bridge.core.mimeinfo import MessageInfo, MimeLimits, analyze
from bridge.core.throttle import LoginThrottle
from bridge.crypto.passwords import verify_any
from bridge.errors import (AuthenticationFailed, AuthorizationIdentityRefused, BareLineEnding,
                           BridgeError, HeaderFromInvalid, HeaderFromNotAllowed, MessageRejected,
                           MessageTooBig, SenderNotAllowed)


# Password checks running at once; each argon2id check holds 19 MiB (crypto/passwords.py).
ARGON2_CONCURRENCY = 2


@dataclass(frozen=True)
class SessionInfo:
    """Who is on the other end of a protocol session, for audit events and throttling."""

    session_id: str
    protocol: str                 # smtp | imap | cli
    ip: str
    tls: bool


@dataclass(frozen=True)
class SubmitSettings:
    hostname: str
    directory_domain: str
    max_message_size: int
    limits: MimeLimits
    dedup_window: int             # seconds; 0 = off


@dataclass(frozen=True)
class Accepted:
    uuid: str
    duplicate: bool               # True: an earlier acceptance of the same Message-ID


def has_bare_line_ending(raw: bytes) -> bool:
    """True if a CR is not followed by LF or an LF is not preceded by CR (SMTP smuggling)."""
    return raw.count(b"\r") != raw.count(b"\r\n") or raw.count(b"\n") != raw.count(b"\r\n")


class BridgeService:
    def __init__(self, store: Any, blobs: Any, clock: Clock, settings: SubmitSettings,
                 throttle: LoginThrottle, on_accepted: Callable[[], None] = lambda: None) -> None:
        self.store, self.blobs, self.clock = store, blobs, clock
        self.settings = settings
        self.throttle = throttle
        self.on_accepted = on_accepted
        self._argon2_slots = threading.BoundedSemaphore(ARGON2_CONCURRENCY)
        self.security: Any = None        # core.secure.MessageSecurity: S/MIME and OpenPGP, when set

    def _event(self, chain: str, kind: str, result: str, ctx: SessionInfo | None, **kw: Any) -> AuditEvent:
        return AuditEvent(time=self.clock.now(), chain=chain, kind=kind, result=result,
                          protocol=ctx.protocol if ctx else None,
                          session_id=ctx.session_id if ctx else None, **kw)

    # --- authentication --------------------------------------------------------------

    def authenticate(self, login: str, password: str, ctx: SessionInfo, authzid: str = "") -> ids.Principal:
        """The principal for `login`/`password`; raises AuthenticationFailed (same for every
        reason) or AuthorizationIdentityRefused.  The caller applies `failure_delay`."""
        login = login.strip().lower()
        if authzid and authzid.strip().lower() != login:
            self.store.append_audit(self._event(SYSTEM_CHAIN, "login", "fail", ctx, actor=login[:320],
                                                details={"reason": "authzid differs", "ip": ctx.ip}))
            raise AuthorizationIdentityRefused(f"authzid {authzid!r} for {login}")
        creds = self.store.credentials(login) if login else None
        hashes = [h for _, h in creds[2]] if creds else []
        with self._argon2_slots:                      # bounded memory: 19 MiB per check
            index = verify_any(password, hashes)      # runs argon2 for unknown users too
        if creds is None or index is None:
            chain = creds[1] if creds else SYSTEM_CHAIN
            reason = "unknown user" if creds is None else "wrong password"
            self.store.append_audit(self._event(chain, "login", "fail", ctx, actor=login[:320],
                                                details={"reason": reason, "ip": ctx.ip}))
            raise AuthenticationFailed(f"{reason}: {login!r}")
        account_id, chain, entries = creds
        app_password_id = entries[index][0]
        self.store.record_login(app_password_id, self._event(
            chain, "login", "ok", ctx, actor=login,
            details={"ip": ctx.ip, "tls": ctx.tls, "credential": "password" if app_password_id is None
                     else "app-password"}))
        return self.store.principal(account_id)

    def failure_delay(self, ip: str, login: str, connection_failures: int) -> float:
        return self.throttle.record_failure(ip, login, connection_failures)

    # --- addresses -------------------------------------------------------------------

    def check_mail_from(self, principal: ids.Principal, address: str, ctx: SessionInfo) -> str:
        try:
            return ids.check_sender(principal, address)
        except SenderNotAllowed as exc:
            self._refused(principal, ctx, exc, subject=address)
            raise

    def check_rcpt(self, principal: ids.Principal, address: str, ctx: SessionInfo) -> ids.Target:
        try:
            addr = ids.classify(address, self.settings.directory_domain, self.store.domain_kinds())
            ids.precheck_recipient(principal, addr)
            target = self.store.resolve(addr)
            corresponded = bool(target) and principal.tenant_kind != "authority" and \
                self.store.corresponded(principal.account_id, target.address)
            return ids.check_target(principal, target, addr, corresponded)
        except BridgeError as exc:
            self._refused(principal, ctx, exc, subject=address)
            raise

    def _refused(self, principal: ids.Principal, ctx: SessionInfo, exc: BridgeError, **kw: Any) -> None:
        self.store.append_audit(self._event(principal.tenant_name, "submit.rejected", "refused", ctx,
                                            actor=principal.login, details={"reason": str(exc)[:500]},
                                            **kw))

    # --- MeMo from systems (drop folder, HTTP API) --------------------------------------

    def system_principal(self, tenant: str) -> ids.Principal:
        """The tenant's system account, for channels its own systems use (NotFound if none)."""
        return self.store.principal(self.store.system_account(tenant))

    def submit_memo(self, principal: ids.Principal, memo_xml: bytes, ctx: SessionInfo) -> Accepted:
        """A MeMo (1.1 or 1.2) submitted by a system: validated (MemoInvalid names the element
        path), addressed by its Recipient (CPR/CVR) under the same rules as SMTP, turned into
        the mail a reader's client shows (memo.xml kept inside), and accepted as `submit` does.
        Held until doNotDeliverUntilDate (midnight Danish time).  Its messageUUID becomes the
        message's UUID: the same MeMo again from the same account returns it (duplicate);
        when another account's message has that UUID, it is refused."""
        from bridge.digitalpost import parse_memo
        from bridge.digitalpost.mail import memo_keywords, memo_to_mail
        msg = parse_memo(memo_xml)
        header = msg.message_header
        # The MeMo's messageUUID is the message's UUID (DESIGN.md section 4): the same one
        # again from the same account is the same message, from anyone else a conflict.
        message_uuid = str(uuid.UUID(header.message_uuid.strip()))
        known = self.store.message(message_uuid)
        if known is not None:
            if known["sender_account_id"] == principal.account_id:
                return Accepted(message_uuid, True)
            raise MessageRejected(f"messageUUID {message_uuid} is taken", public=(
                f"messageUUID {message_uuid} is already the UUID of another message; "
                "give every MeMo a new UUID (version 4)"))
        kind = header.recipient.id_type.strip().lower()
        if kind not in ("cpr", "cvr"):
            raise MessageRejected(kind, public=f"the MeMo recipient's idType must be CPR or CVR, "
                                               f"not {header.recipient.id_type!r}")
        address = f"{header.recipient.recipient_id.strip()}@{kind}.{self.settings.directory_domain}"
        target = self.check_rcpt(principal, address, ctx)
        sender = self.check_mail_from(principal, _memo_sender(principal), ctx)
        try:
            memo_rules(principal, msg)
        except BridgeError as exc:
            self._refused(principal, ctx, exc, subject=address)
            raise
        # ReplyData naming a message of either end by UUID threads the mail under it.
        thread = self.store.message_ids_by_uuid(
            [r.message_uuid for r in header.reply_data],
            [thread_scope(principal.tenant_id, principal.account_id, principal.tenant_kind),
             thread_scope(target.tenant_id, target.id if target.kind == "account" else None,
                          target.tenant_kind)])
        raw = memo_to_mail(msg, memo_xml, from_header=sender, to_header=address,
                           message_id=f"<{header.message_uuid}@{self.settings.hostname}>",
                           date=self.clock.now(), message_ids=thread)
        # NemSMS: no mailbox copy; the notice goes to the notification channel's outbox.
        notify = ("nemsms", header.notification or header.label) \
            if header.message_type.upper() == "NEMSMS" else None
        if notify:
            logging.getLogger("bridge.notifications").info(
                "NemSMS %s for %s handed to the notification outbox", header.message_uuid, address)
        return self.submit(principal, sender, [(address, target)], raw, ctx, (),
                           _hold_until(header.do_not_deliver_until_date, self.clock.now()),
                           memo={"messageUUID": header.message_uuid, "memoVersion": msg.memo_version,
                                 "keywords": memo_keywords(msg), "messageType": header.message_type},
                           notify=notify, message_uuid=message_uuid)

    # --- submission ----------------------------------------------------------------

    def submit(self, principal: ids.Principal, mail_from: str, recipients: list[tuple[str, ids.Target]],
               raw: bytes, ctx: SessionInfo, refused: list[tuple[str, str, str]] = (),
               hold_until: dt.datetime | None = None, memo: dict[str, Any] | None = None,
               notify: tuple[str, str] | None = None, message_uuid: str | None = None) -> Accepted:
        """Check the message and accept it durably: blob fsynced, then the message, its delivery
        jobs, its audit events and the receipts owed for them committed in one transaction.
        Only then does this return.  `refused`: (address, status, reason) of recipients refused
        at RCPT in the same transaction, each owed a SubmissionRejection receipt.  `hold_until`:
        the recipients' copies are not delivered before then (RFC 4865 FUTURERELEASE, MeMo
        doNotDeliverUntilDate); the sender's Sent copy is filed at once."""
        try:
            raw, info = self._checked(principal, raw)
        except BridgeError as exc:
            if not exc.temporary:
                self._refused(principal, ctx, exc)
            raise
        original = mdn_displayed(raw, info)
        if original:
            # RFC 8098: the reader's own client reports the letter displayed.  It becomes signed
            # read evidence for the letter's sender (the user agreed to send it) and is not
            # passed on raw.  An MDN about anything else is ordinary mail.
            read = self.store.read_by_mdn(principal.account_id, original)
            if read:
                return Accepted(read, False)
        signatures: list[Any] = []
        if self.security is not None:
            try:
                clear, signatures = self.security.inbound(raw, principal.tenant_name, info.from_addrs[0])
            except BridgeError as exc:
                self._refused(principal, ctx, exc)
                raise
            if clear is not raw:            # decrypted: what is accepted and delivered
                raw, info = clear, analyze(clear, self.settings.limits)
        if memo is None and carries_memo_fields(raw, info.header_size, info.body):
            # A mail (e.g. from Outlook) with X-MeMo-* fields or a memo.xml part: they must
            # make a valid MeMo, and they act as in a MeMo from a system.
            try:
                fields = submitted_memo_fields(principal, raw, self.clock.now())
            except BridgeError as exc:
                self._refused(principal, ctx, exc)
                raise
            memo = fields.memo
            later = _hold_until(fields.do_not_deliver_until, self.clock.now())
            hold_until = max((t for t in (hold_until, later) if t is not None), default=None)
            if fields.notification is not None:
                notify = ("nemsms", fields.notification)
        return self._accept(principal, mail_from, recipients, raw, info, ctx, refused, signatures, hold_until,
                            memo or {}, notify, message_uuid)

    def _checked(self, principal: ids.Principal, raw: bytes) -> tuple[bytes, MessageInfo]:
        if len(raw) > self.settings.max_message_size:
            raise MessageTooBig(f"{len(raw)} bytes")
        if has_bare_line_ending(raw):
            raise BareLineEnding()
        info = analyze(raw, self.settings.limits)
        if info.from_header_count != 1 or len(info.from_addrs) != 1:
            raise HeaderFromInvalid(f"{info.from_header_count} From fields, {len(info.from_addrs)} addresses")
        if info.from_addrs[0] not in principal.sender_addresses:
            raise HeaderFromNotAllowed(f"{principal.login} wrote From {info.from_addrs[0]}")
        if info.message_id and info.date:
            return raw, info
        raw = self._complete_header(raw, info)    # RFC 6409 section 8.2/8.3: MSA adds them
        return raw, analyze(raw, self.settings.limits)

    def _complete_header(self, raw: bytes, info: MessageInfo) -> bytes:
        extra = b""
        if not info.message_id:
            extra += f"Message-ID: <{uuid.uuid4()}@{self.settings.hostname}>\r\n".encode()
        if not info.date:
            extra += f"Date: {_rfc5322_date(self.clock.now())}\r\n".encode()
        return extra + raw

    def _accept(self, principal: ids.Principal, mail_from: str, recipients: list[tuple[str, ids.Target]],
                raw: bytes, info: MessageInfo, ctx: SessionInfo, refused: Any = (),
                signatures: list[Any] = (), hold_until: dt.datetime | None = None,
                memo: dict[str, Any] | None = None, notify: tuple[str, str] | None = None,
                message_uuid: str | None = None) -> Accepted:
        submitted = self._event(principal.tenant_name, "submitted", "ok", ctx, actor=principal.login)
        sha = self.blobs.put(raw)
        message_uuid = message_uuid or str(uuid.uuid4())
        targets = _unique_targets(recipients)
        sub = Submission(uuid=message_uuid, message_id=info.message_id or "", thread_id=str(uuid.uuid4()),
                         in_reply_to=info.in_reply_to[0] if info.in_reply_to else None,
                         tenant_id=principal.tenant_id, sender_account_id=principal.account_id,
                         sender_party_id=principal.party_id, from_address=info.from_addrs[0],
                         subject=info.subject, sha256=sha, size=len(raw), internal_date=self.clock.now(),
                         origin=ctx.protocol, session_id=ctx.session_id,
                         auth=[asdict(r) for r in signatures], memo=memo or {})
        event = self._event(principal.tenant_name, "submit.accepted", "ok", ctx, actor=principal.login,
                            message_uuid=message_uuid,
                            details={"sha256": sha, "size": len(raw), "message_id": sub.message_id,
                                     "mail_from": mail_from, "header_from": sub.from_address,
                                     "recipients": [r for r, _ in targets],
                                     **({"signatures": sub.auth} if sub.auth else {}),
                                     **({"release_at": hold_until.isoformat()} if hold_until else {}),
                                     **({"notify": notify[0]} if notify else {})})
        window = self.settings.dedup_window
        accepted_uuid, duplicate = self.store.accept(
            sub, [t for _, t in targets], [r for r, _ in targets], event, info,
            dedup_since=self.clock.now() - dt.timedelta(seconds=window) if window else None,
            references=info.in_reply_to + info.references,
            submitted=replace(submitted, message_uuid=message_uuid, details={
                "size": len(raw), "mail_from": mail_from, "recipients": len(targets) + len(refused)}),
            refused=list(refused), hold_until=hold_until, notify=notify)
        if not duplicate:
            self.on_accepted()
        return Accepted(accepted_uuid, duplicate)


def _memo_sender(principal: ids.Principal) -> str:
    """A system's MeMo comes from the tenant's contact point the system account may send as
    (the first, by address), else from the system account itself."""
    return min(principal.contact_points) if principal.contact_points else principal.login


def _hold_until(day: dt.date | None, now: dt.datetime) -> dt.datetime | None:
    """doNotDeliverUntilDate (a date) as the UTC instant it begins in Denmark, if still ahead."""
    if day is None:
        return None
    from zoneinfo import ZoneInfo
    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=ZoneInfo("Europe/Copenhagen"))
    return start.astimezone(dt.timezone.utc) if start > now else None


def mdn_displayed(raw: bytes, info: MessageInfo) -> str | None:
    """The Original-Message-ID of an RFC 8098 MDN whose disposition is "displayed", else None."""
    body = info.body
    if body.get("type") != "multipart" or body.get("subtype") != "report" or \
            dict(body.get("params") or []).get("report-type", "").lower() != "disposition-notification":
        return None
    for part in body.get("parts", []):
        if part.get("type") == "message" and part.get("subtype") == "disposition-notification":
            start, end = part["offsets"][1], part["offsets"][2]
            text = raw[start:end]
            if part.get("encoding") == "BASE64":
                import base64
                try:
                    text = base64.b64decode(text)
                except ValueError:
                    return None
            fields = _fields(text.decode("utf-8", "replace"))
            disposition = fields.get("disposition", "").split(";")[-1].strip().lower()
            original = fields.get("original-message-id", "").strip()
            if disposition.split("/")[0] == "displayed" and original.startswith("<"):
                return original
    return None


def _fields(text: str) -> dict[str, str]:
    """Header-style fields of an MDN part (unfolded, first of each name)."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and name:
            out[name] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            name = key.strip().lower()
            if name in out:
                name = None
            else:
                out[name] = value.strip()
    return out


def _unique_targets(recipients: list[tuple[str, ids.Target]]) -> list[tuple[str, ids.Target]]:
    """One delivery per mailbox owner, even if two addresses reach the same one."""
    seen: set[tuple[str, int]] = set()
    out = []
    for rcpt, target in recipients:
        if (target.kind, target.id) not in seen:
            seen.add((target.kind, target.id))
            out.append((rcpt, target))
    return out


def _rfc5322_date(when: dt.datetime) -> str:
    from email.utils import format_datetime
    return format_datetime(when.astimezone(dt.timezone.utc))

"""The receipt worker: owed receipts become signed messages in their owners' Receipts mailbox.

A receipt is owed in the transaction of the event it attests (store/receipts.py).
This worker leases owed receipts, builds each one's evidence (evidence.xml)
from the stored message and the event's audit link, has the tenant whose chain
holds the event sign it (S/MIME detached, its evidence key), stores the bytes
as a blob, and files it in ONE transaction with the `receipt.issued` audit
event.  A crash before that commit leaves the receipt to be issued again when
its lease runs out; the unique key of a receipt row means it is issued once.

Identities in evidence are masked to what the receipt's owner may see: a CVR
always, a CPR number in full only for an authority, else its birth date part.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Awaitable, Callable

from bridge.clock import Clock
from bridge.core.audit import AuditEvent
from bridge.core.events import MessageEvents
from bridge.core.mimeinfo import MimeLimits, analyze
from bridge.crypto.results import SigResult
from bridge.receipts.compose import build_receipt
from bridge.receipts.evidence import Evidence, PartyRef

log = logging.getLogger("bridge.receipts")

# One batch at a time, filed in one unit of the group commit: receipts trail submission and
# delivery instead of competing with them for the CPU (bench/submit.py prints both).
BATCH = 64
LEASE_SECONDS = 120.0
MAX_ATTEMPTS = 5
RETRY_SECONDS = 30.0
PER_RECIPIENT = {"ContentConsignment", "ContentConsignmentFailure", "SubmissionRejection",
                 "ContentAccessTracking"}


def visible_party(party: str | None, reader_tenant_kind: str) -> str | None:
    """A party id as a receipt's reader may see it."""
    if not party or party.startswith("cvr:") or reader_tenant_kind == "authority":
        return party
    digits = party.removeprefix("cpr:")
    return f"cpr:{digits[:6]}-xxxx" if len(digits) == 10 else None


class ReceiptWorker:
    def __init__(self, repo: Any, blobs: Any, clock: Clock, events: MessageEvents, *,
                 signer: Callable[[str], tuple[Any, str]], hostname: str, limits: MimeLimits,
                 poll_interval: float, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        """`signer(tenant)` gives (an object with `.sign(bytes) -> DER`, the From address of
        the tenant's receipts, which its evidence certificate names)."""
        self.repo, self.blobs, self.clock, self.events = repo, blobs, clock, events
        self.signer, self.hostname, self.limits = signer, hostname, limits
        self.poll_interval, self.run_blocking = poll_interval, run_blocking
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                owed = await self.run_blocking(self.repo.claim, BATCH, LEASE_SECONDS)
                if owed:
                    await self.run_blocking(self.issue_many, owed, stopping.is_set)
                issued = len(owed)
            except Exception:
                log.exception("receipt pass failed; retrying")
                issued = 0
            if not issued:
                self._wake.clear()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
                await asyncio.wait(waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()

    def issue_many(self, owed: list[Any], stopping: Callable[[], bool] = lambda: False) -> None:
        """Build, sign and store each receipt, then file them all in one unit of the group
        commit; if that fails, each alone (so only a faulty one fails).  Receipts not started
        when `stopping()` keep their lease and are issued after the restart."""
        ready = []
        parties: dict[str, tuple[str | None, str]] = {}     # party_of, looked up once a batch
        for o in owed:
            if stopping():
                break
            try:
                ready.append((o, *self._prepare(o, parties)))
            except Exception as exc:
                self._failed(o, exc)
        if not ready:
            return
        try:
            filed = self.repo.file_many(ready)
        except Exception as exc:
            if len(ready) == 1:
                self._failed(ready[0][0], exc)
                return
            log.debug("filing %d receipts together failed (%s); filing each alone", len(ready), exc)
            filed = [self._file_alone(item) for item in ready]
        for f in filed:
            if f is not None:
                self.events.publish(f)

    def _prepare(self, o: Any, parties: dict[str, tuple[str | None, str]] | None = None
                 ) -> tuple[str, Any, dict[str, Any]]:
        """(blob sha256, analysis, filing fields) of the signed receipt for `o`."""
        pki, from_address = self.signer(o.audit_chain)
        raw = build_receipt(self.evidence(o, parties), from_address=from_address,
                            from_name=f"{o.issuer_name} - kvittering", to_address=o.owner_login,
                            hostname=self.hostname, sign=pki.sign)
        info = analyze(raw, self.limits)
        sha = self.blobs.put(raw)
        return sha, info, {
            "message_id": info.message_id or f"<{o.evidence_id}@{self.hostname}>",
            "from_address": from_address, "subject": info.subject or o.event,
            "audit": AuditEvent(time=self.clock.now(), chain=o.audit_chain, kind="receipt.issued", result="ok",
                                actor="receipts", subject=o.owner_login, message_uuid=o.message_uuid,
                                protocol="worker", details={"event": o.event, "evidence_id": o.evidence_id,
                                                            "recipient": o.recipient, "audit_seq": o.audit_seq})}

    def _file_alone(self, item: tuple[Any, str, Any, dict[str, Any]]) -> Any:
        try:
            return self.repo.file_many([item])[0]
        except Exception as exc:
            self._failed(item[0], exc)
            return None

    def _failed(self, o: Any, exc: Exception) -> None:
        log.error("receipt %s (%s of message %s) could not be issued: %s", o.evidence_id, o.event,
                  o.message_uuid, exc, exc_info=exc)
        final = o.attempts >= MAX_ATTEMPTS
        retry = None if final else self.clock.now() + dt.timedelta(seconds=RETRY_SECONDS * o.attempts)
        try:
            self.repo.fail(o, f"{type(exc).__name__}: {exc}", retry)
        except Exception:
            log.exception("could not record the failure of receipt %s; its lease will expire", o.id)

    def evidence(self, o: Any, parties: dict[str, tuple[str | None, str]] | None = None) -> Evidence:
        """`o`'s evidence; `parties` keeps the recipients' parties looked up (for one batch)."""
        d = o.details
        kind = o.owner_tenant_kind
        sender = PartyRef(o.from_address, o.sender_name, visible_party(o.sender_party, kind))
        recipient = None
        if o.event in PER_RECIPIENT:
            address = d.get("owner") or o.recipient
            found = parties.get(address) if parties is not None else None
            if found is None:
                found = self.repo.party_of(address)
                if parties is not None:
                    parties[address] = found
            party, name = found
            recipient = PartyRef(o.recipient, name, visible_party(party, kind))
        elif o.event == "HandlingStarted":
            recipient = PartyRef(d.get("contact_point", ""), d.get("handler", ""), None)
        return Evidence(
            evidence_id=o.evidence_id, event=o.event, time=o.time, issuer=o.audit_chain,
            issuer_name=o.issuer_name, sender=sender, recipient=recipient, message_uuid=o.message_uuid,
            message_id=o.message_id or "", sha256=o.sha256, delivered_sha256=d.get("delivered_sha256"),
            audit_chain=o.audit_chain, audit_seq=o.audit_seq, audit_hash=o.audit_hash,
            status=d.get("status"), reason=d.get("reason") or None, handler=d.get("handler"),
            handler_person=d.get("handler_person"), read_mode=d.get("read_mode"), subject=o.subject,
            signature="; ".join(SigResult(**r).header_part() for r in o.auth) or None)

"""The delivery worker: drains the durable queue into mailboxes (DESIGN.md section 4.3).

A job is claimed with a lease, its copy is rendered and stored as a blob, and
then ONE transaction files the entry (UID, MODSEQ), marks the job done and
records the `delivered` audit event.  A crash before that commit leaves the job
claimable again when its lease runs out (at start-up every lease of this store
is free again); a crash after it finds the job done.  So each job is filed
exactly once.  Filed messages are announced through `MessageEvents` for IDLE.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Awaitable, Callable

from bridge.clock import Clock
from bridge.core.audit import AuditEvent
from bridge.core.events import MessageEvents
from bridge.core.messages import Filed, Job
from bridge.core.mimeinfo import MimeLimits, analyze
from bridge.core.render import auth_results_field, received_field, render_copy
from bridge.crypto.results import SigResult
from bridge.errors import PolicyError, RecipientDisabled

log = logging.getLogger("bridge.delivery")

BATCH = 64
LEASE_SECONDS = 120.0
CONCURRENCY = 8


class DeliveryWorker:
    def __init__(self, store: Any, blobs: Any, clock: Clock, events: MessageEvents, *,
                 hostname: str, directory_domain: str, limits: MimeLimits, poll_interval: float,
                 max_attempts: int, retry_delay: float,
                 run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.store, self.blobs, self.clock, self.events = store, blobs, clock, events
        self.hostname, self.directory_domain, self.limits = hostname, directory_domain, limits
        self.poll_interval, self.max_attempts, self.retry_delay = poll_interval, max_attempts, retry_delay
        self.run_blocking = run_blocking
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.on_filed: Callable[[], None] = lambda: None    # receipts may be owed now
        self.security: Any = None                            # core.secure.MessageSecurity

    def wake(self) -> None:
        """Called (from any thread via the loop) when a message was accepted."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; a job in progress finishes, the rest stays queued."""
        while not stopping.is_set():
            try:
                jobs = await self.run_blocking(self.store.claim_jobs, BATCH, LEASE_SECONDS)
                await asyncio.gather(*(self._deliver_chunk(chunk, stopping) for chunk in _chunks(jobs)))
            except Exception:
                log.exception("delivery pass failed; retrying")
                jobs = []
            if not jobs:
                await self._sleep(stopping)

    async def _deliver_chunk(self, jobs: list[Job], stopping: asyncio.Event) -> None:
        """Chunks run CONCURRENCY at a time so that their filings share commits; a job not
        started when stopping begins keeps its lease and is taken up after the restart."""
        async with self._slots:
            if not stopping.is_set():
                await self.run_blocking(self.deliver_many, jobs, stopping.is_set)

    async def _sleep(self, stopping: asyncio.Event) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
        await asyncio.wait(waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    def deliver(self, job: Job) -> Filed | None:
        """Deliver one claimed job (blocking).  Failures are retried later or marked failed."""
        return self.deliver_many([job])[0]

    def deliver_many(self, jobs: list[Job], stopping: Callable[[], bool] = lambda: False) -> list[Filed | None]:
        """Deliver claimed jobs (blocking), as `deliver` does one by one, but with one thread
        hop and one shared filing for all of them: each copy is prepared, then every copy is
        filed in one unit of the group commit.  If that fails, each is filed alone, so only
        a faulty job fails (as with `deliver`).  Jobs not started when `stopping()` keep
        their lease."""
        out: list[Filed | None] = [None] * len(jobs)
        ready: list[tuple[int, Job, str, Any, AuditEvent]] = []
        for i, job in enumerate(jobs):
            if stopping():
                break
            try:
                sha, info = self._prepare(job)
            except Exception as exc:
                log.exception("delivery of job %s (message %s) failed", job.id, job.message_uuid)
                self._failed(job, exc)
                continue
            ready.append((i, job, sha, info, self._event(job, "delivered", "ok")))
        if not ready:
            return out
        try:
            filed = self.store.file_many([(job, sha, info, event) for _, job, sha, info, event in ready])
        except Exception as exc:
            if len(ready) == 1:
                job = ready[0][1]
                log.exception("delivery of job %s (message %s) failed", job.id, job.message_uuid)
                self._failed(job, exc)
                return out
            log.debug("filing %d jobs together failed (%s); filing each alone", len(ready), exc)
            filed = [self._file_alone(*item[1:]) for item in ready]
        for (i, *_), result in zip(ready, filed):
            out[i] = result
            if result is not None:
                self.events.publish(result)
        self.on_filed()
        return out

    def _file_alone(self, job: Job, sha: str, info: Any, event: AuditEvent) -> Filed | None:
        try:
            return self.store.file(job, sha, info, event)
        except Exception as exc:
            log.exception("delivery of job %s (message %s) failed", job.id, job.message_uuid)
            self._failed(job, exc)
            return None

    def _prepare(self, job: Job) -> tuple[str, Any]:
        if job.owner_disabled and job.kind == "inbox":
            raise RecipientDisabled(job.owner_address)
        if job.kind == "sent":           # the accepted blob: its content row was made at acceptance
            return job.sha256, None
        raw = self.blobs.get(job.sha256)
        copy = render_copy(
            raw, reader_address=job.owner_address,
            reader_directory_address=job.recipient if job.recipient.endswith(
                f"@cpr.{self.directory_domain}") else None,
            reader_is_authority=job.owner_tenant_kind == "authority",
            directory_domain=self.directory_domain,
            received=received_field(self.hostname, job.message_uuid, self.clock.now(), "smtp"),
            auth_results=auth_results_field(self.hostname, job.from_address, self._visible_party(job),
                                            [SigResult(**r).header_part() for r in job.auth]))
        if self.security is not None:
            copy = self.security.for_reader(copy, job.owner_kind, job.owner_address, job.owner_chain)
        return self.blobs.put(copy), analyze(copy, MimeLimits(
            max_header_bytes=self.limits.max_header_bytes + 4096,
            max_header_count=self.limits.max_header_count + 4, max_mime_depth=self.limits.max_mime_depth))

    def _visible_party(self, job: Job) -> str | None:
        """The sender's legal identity as this reader may see it: CVR always, CPR only for
        authorities."""
        if job.sender_party and (job.sender_party.startswith("cvr:") or job.owner_tenant_kind == "authority"):
            return job.sender_party
        return None

    def _event(self, job: Job, kind: str, result: str, **details: Any) -> AuditEvent:
        return AuditEvent(time=self.clock.now(), chain=job.tenant_name, kind=kind, result=result,
                          actor="delivery", subject=job.owner_address, message_uuid=job.message_uuid,
                          protocol="worker", details={"mailbox": "Sent" if job.kind == "sent" else "INBOX",
                                                      "recipient_chain": job.owner_chain, **details})

    def _failed(self, job: Job, exc: Exception) -> None:
        permanent = isinstance(exc, PolicyError)    # the recipient is disabled, or cannot be encrypted to
        final = permanent or job.attempts >= self.max_attempts
        retry_at = None if final else self.clock.now() + dt.timedelta(
            seconds=self.retry_delay * job.attempts)
        if permanent:
            status, reason = exc.enhanced, exc.public
        else:
            status, reason = "5.3.0", f"the message could not be filed after {job.attempts} attempts"
        event = self._event(job, "delivery.failed" if final else "delivery.deferred", "fail",
                            attempts=job.attempts, error=type(exc).__name__,
                            **({"status": status, "reason": reason} if final else {}))
        try:
            self.store.fail_job(job, f"{type(exc).__name__}: {exc}", retry_at, event, status)
        except Exception:
            log.exception("could not record failure of job %s; its lease will expire", job.id)


def _chunks(jobs: list[Job]) -> list[list[Job]]:
    """At most CONCURRENCY chunks of about equal size; the jobs of one message (its INBOX
    and Sent copies) stay in one chunk, so they are filed together."""
    by_message: dict[int, list[Job]] = {}
    for job in jobs:
        by_message.setdefault(job.message_pk, []).append(job)
    chunks: list[list[Job]] = [[] for _ in range(min(CONCURRENCY, len(by_message)))]
    for n, group in enumerate(by_message.values()):
        chunks[n % len(chunks)].extend(group)
    return chunks

"""Composition root: config -> store, blobs, services -> listeners and the delivery worker.

The only module that knows every concrete class.  `App.start()` binds every
listener and starts the worker on the running event loop; `App.stop()` closes
listeners, lets the delivery in progress finish (the rest stays queued) and
closes the store.  Blocking work (SQL, fsync, argon2) runs in a thread pool
through `run_blocking`, which carries the session id into the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from bridge.clock import Clock, SystemClock
from bridge.config import Config, parse_listen
from bridge.core.delivery import DeliveryWorker
from bridge.core.events import LocalEvents
from bridge.core.mimeinfo import MimeLimits
from bridge.core.service import BridgeService, SubmitSettings
from bridge.core.throttle import LoginThrottle
from bridge.smtpserver.handler import SubmissionHandler
from bridge.smtpserver.server import close_all, start_listeners
from bridge.store.blobs import FileBlobStore
from bridge.store.sql import SqlStore

log = logging.getLogger("bridge.app")


def tls_server_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.resolve(config.tls.cert_file), config.resolve(config.tls.key_file))
    return ctx


def build_service(config: Config, store: SqlStore, blobs: FileBlobStore, clock: Clock,
                  on_accepted: Callable[[], None] = lambda: None) -> BridgeService:
    settings = SubmitSettings(hostname=config.bridge.hostname,
                              directory_domain=config.bridge.directory_domain,
                              max_message_size=config.smtp.max_message_size,
                              limits=mime_limits(config), dedup_window=config.smtp.dedup_window)
    throttle = LoginThrottle(config.auth.failure_delay, config.auth.failure_delay_max,
                             config.auth.failure_window)
    return BridgeService(store, blobs, clock, settings, throttle, on_accepted)


def mime_limits(config: Config) -> MimeLimits:
    return MimeLimits(max_header_bytes=config.smtp.max_header_bytes,
                      max_header_count=config.smtp.max_header_count,
                      max_mime_depth=config.smtp.max_mime_depth)


class App:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store = SqlStore(config.database_url, self.clock)
        self.blobs = FileBlobStore(config.resolve(config.bridge.blob_dir))
        # Client sessions and the delivery worker get separate threads, so a delivery backlog
        # never makes a client wait for its 250 (each blocking step waits on an fsync).
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="bridge-io")
        self.delivery_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bridge-delivery")
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None
        self._receipt_task: asyncio.Task[None] | None = None
        self._dropfolder_task: asyncio.Task[None] | None = None
        self._signers: dict[str, tuple[Any, str, Any]] = {}
        self.api: Any = None                      # httpapi.server.ApiServer when [api] is enabled

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call for a client session in a thread, with the session's context."""
        return await _in_thread(self.executor, fn, *args)

    async def run_delivery(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await _in_thread(self.delivery_executor, fn, *args)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.events = LocalEvents(loop)
        c = self.config
        self.worker = DeliveryWorker(
            self.store, self.blobs, self.clock, self.events, hostname=c.bridge.hostname,
            directory_domain=c.bridge.directory_domain, limits=mime_limits(c),
            poll_interval=c.delivery.poll_interval, max_attempts=c.delivery.max_attempts,
            retry_delay=c.delivery.retry_delay, run_blocking=self.run_delivery)
        from bridge.core.receipts import ReceiptWorker
        from bridge.store.receipts import ReceiptRepository
        receipts = ReceiptRepository(self.store)
        self.receipts = ReceiptWorker(
            receipts, self.blobs, self.clock, self.events, signer=self.signer, hostname=c.bridge.hostname,
            limits=mime_limits(c), poll_interval=c.delivery.poll_interval, run_blocking=self.run_delivery)
        self.worker.on_filed = lambda: loop.call_soon_threadsafe(self.receipts.wake)

        def accepted() -> None:
            loop.call_soon_threadsafe(self.worker.wake)
            loop.call_soon_threadsafe(self.receipts.wake)
        self.service = build_service(c, self.store, self.blobs, self.clock, on_accepted=accepted)
        await self.run_blocking(self.store.check_schema)
        await self.run_blocking(self.ensure_evidence_keys)
        from bridge.core.secure import MessageSecurity
        security = MessageSecurity(self.store, c.resolve("certs"), c.resolve("gnupg"), self.clock)
        self.service.security = self.worker.security = security
        released = await self.run_blocking(self.store.release_leases)
        released += await self.run_blocking(receipts.release_leases)
        if released:
            log.info("%d delivery jobs and receipts interrupted earlier are queued again", released)
        handler = SubmissionHandler(self.service, self.run_blocking, c.smtp.max_recipients,
                                    c.auth.max_failures_per_connection)
        listeners = c.smtp_listeners()
        self.servers = await start_listeners(
            handler, tls_server_context(c), c.bridge.hostname,
            [(x.host, x.port) for x in listeners["starttls"]],
            [(x.host, x.port) for x in listeners["implicit"]], c.smtp.max_message_size, c.smtp.timeout)
        self.servers += await self._start_imap(c)
        self.api = await self._start_api(c)
        self._worker_task = asyncio.create_task(self.worker.run(self.stopping))
        self._receipt_task = asyncio.create_task(self.receipts.run(self.stopping))
        if c.dropfolder.enabled:
            from bridge.digitalpost.dropfolder import DropFolders
            folders = DropFolders(self.service, c.resolve(c.dropfolder.base_dir),
                                  lambda: [t["name"] for t in self.store.tenants() if t["kind"] != "citizens"],
                                  self.run_blocking, self.clock, c.dropfolder.poll_interval)
            self._dropfolder_task = asyncio.create_task(folders.run(self.stopping))

    def ensure_evidence_keys(self) -> None:
        """Every tenant gets its CA, evidence and bridge certificates (homes made before them)."""
        from bridge.crypto.usercerts import bridge_address, ensure_bridge_cert
        for t in self.store.tenants():
            self.signer(t["name"], t)
            ensure_bridge_cert(self.config.resolve("certs"), t["name"], t["display_name"],
                               bridge_address(t["domains"], self.config.bridge.hostname))

    def signer(self, tenant: str, record: dict | None = None) -> tuple[Any, str]:
        """(the tenant's PKI, which signs its receipts; the From address of its receipts).
        Looked at again once a day, so an evidence certificate due for renewal is renewed
        (crypto.evidence.renew_evidence_cert) in a bridge that runs for years."""
        today = self.clock.now().date()
        found = self._signers.get(tenant)
        if found is None or found[2] != today:
            from bridge.crypto.evidence import ensure_tenant_pki, receipts_address
            t = record or self.store.tenant(tenant)
            address = receipts_address(t["domains"], self.config.bridge.hostname)
            pki = ensure_tenant_pki(self.config.resolve("certs"), t["name"], t["display_name"], address)
            found = self._signers[tenant] = (pki, address, today)
        return found[0], found[1]

    async def _start_imap(self, c: Config) -> list[asyncio.AbstractServer]:
        from bridge.imapserver.server import start_listeners as start_imap
        from bridge.imapserver.session import Context, ImapSession
        from bridge.store.mailboxes import MailboxRepository
        ctx = Context(service=self.service, mailboxes=MailboxRepository(self.store), blobs=self.blobs,
                      run_blocking=self.run_blocking, events=self.events, tls_context=tls_server_context(c),
                      max_failures=c.auth.max_failures_per_connection)
        listeners = [parse_listen(x) for x in c.imap.listen_starttls], \
            [parse_listen(x) for x in c.imap.listen_implicit_tls]
        return await start_imap(lambda conn: ImapSession(conn, ctx),
                                ctx.tls_context, [(x.host, x.port) for x in listeners[0]],
                                [(x.host, x.port) for x in listeners[1]])

    async def _start_api(self, c: Config) -> Any:
        """The HTTPS API on [api] listen (bridge.httpapi), or None when it is disabled."""
        if not c.api.enabled or not c.api.listen:
            return None
        from bridge.httpapi.app import ApiContext
        from bridge.httpapi.server import start_api
        ctx = ApiContext(self.service, self.store, self.blobs, self.run_blocking, c.api.max_body_bytes)
        return await start_api(ctx, [parse_listen(x) for x in c.api.listen],
                               str(c.resolve(c.tls.cert_file)), str(c.resolve(c.tls.key_file)),
                               c.resolve("certs"))

    def bound(self) -> list[tuple[str, str, int]]:
        """(role, host, port) of every listener, in config order."""
        c = self.config
        roles = ["smtp-starttls"] * len(c.smtp.listen_starttls) + \
            ["smtp-implicit-tls"] * len(c.smtp.listen_implicit_tls) + \
            ["imap-starttls"] * len(c.imap.listen_starttls) + ["imap-implicit-tls"] * len(c.imap.listen_implicit_tls)
        out = []
        for role, server in zip(roles, self.servers):
            host, port = server.sockets[0].getsockname()[:2]
            out.append((role, host, port))
        out += [("https-api", host, port) for host, port in (self.api.bound if self.api else [])]
        return out

    async def stop(self) -> None:
        self.stopping.set()
        if self.api:
            await self.api.stop()
        for server in self.servers:
            server.close()
        await close_all()
        from bridge.imapserver.server import close_all as close_imap
        await close_imap()
        for server in self.servers:
            await server.wait_closed()
        if self._worker_task:
            await self._worker_task
        if self._receipt_task:
            await self._receipt_task
        if self._dropfolder_task:            # its last file still uses run_blocking
            await self._dropfolder_task
        self.executor.shutdown(wait=True)
        self.delivery_executor.shutdown(wait=True)
        self.store.close()


async def _in_thread(executor: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args))


def release_large_blocks() -> None:
    """Let glibc's malloc return large blocks to the system when they are freed.

    Each argon2id check allocates 19 MiB (crypto/passwords.py).  After the first such block
    is freed, glibc raises its mmap threshold above it, so later ones come from the heap of
    the thread that checks the password and stay resident: a few logins spread over the
    bridge-io threads left the server at ~260 MB.  A fixed threshold (1 MiB; it also turns
    off the adjustment) keeps such blocks mmap'd: ~70 MB after the same logins.  Elsewhere
    (another libc) this does nothing."""
    import ctypes
    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)      # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


async def serve(config: Config, ready: Callable[[App], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT."""
    import signal
    release_large_blocks()
    app = App(config)
    await app.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if ready:
        ready(app)
    await done.wait()
    log.info("stopping: in-flight deliveries finish, the rest stays queued")
    await app.stop()


__all__ = ["App", "serve", "parse_listen"]

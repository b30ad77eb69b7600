"""TLS of the API listeners: client certificates from the tenant CAs, and the ASGI TLS extension.

`server_context` builds the listeners' SSLContext: the bridge's [tls] chain and
key, TLS 1.2 or later, and a client certificate requested but not required
(`CERT_OPTIONAL`: a client without one still gets a TLS session and may use a
bearer token; one whose certificate does not chain to a trusted CA is refused
in the handshake).  `ClientCAs` decides which CAs are trusted: every tenant CA
(`<certs>/tenants/<tenant>/ca.pem`) and every trust anchor a tenant imported
(`trust/*.pem`, see crypto.usercerts).  The CLI makes tenants and CAs in
another process, so `ClientCAs.watch` looks for new or changed files every
`RELOAD_SECONDS` and adds them to the live context
(`SSLContext.load_verify_locations` adds to the store of a context in use).
A CA file that is removed stays trusted until a restart; that only widens
which chains pass the handshake, since the account is found by the
certificate's SHA-256 fingerprint in the store (httpapi.app), not by its CA.

uvicorn does not pass the peer certificate to the application.  `TlsH11Protocol`
is uvicorn's h11 protocol class plus the ASGI TLS extension
(https://asgi.readthedocs.io/en/latest/specs/tls.html): each request's
`scope["extensions"]["tls"]` holds `server_cert`, `client_cert_chain`,
`client_cert_name`, `client_cert_error`, `tls_version` and `cipher_suite`.
Python 3.11's SSLObject gives only the peer's own certificate, so
`client_cert_chain` holds the client certificate alone (the spec allows a
shorter chain; nothing here needs the intermediates).  `client_cert_error` is
always None: a certificate that fails verification ends the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from uvicorn.protocols.http.h11_impl import H11Protocol

RELOAD_SECONDS = 2.0
# Seconds a connection may take to send a request's line and header fields.
HEAD_TIMEOUT = 20.0
# What ssl.SSLObject.version() says -> the TLS version number (RFC 5246, RFC 8446).
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
log = logging.getLogger("bridge.http")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The API's server context: [tls] chain and key, TLS >= 1.2, client certificate optional
    (trusted CAs are added by `ClientCAs`)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


@dataclass
class ClientCAs:
    """The tenant CAs and imported trust anchors under `certs_dir`, kept loaded into `context`."""

    context: ssl.SSLContext
    certs_dir: Path
    seen: dict[Path, tuple[int, int]] = field(default_factory=dict)    # path -> (mtime_ns, size)

    def changed(self) -> list[tuple[Path, bytes]]:
        """(path, content) of the CA files that are new or changed since the last call
        (blocking: run it in the thread pool)."""
        tenants = self.certs_dir / "tenants"
        paths = sorted(tenants.glob("*/ca.pem")) + sorted(tenants.glob("*/trust/*.pem"))
        out = []
        for path in paths:
            try:
                st = path.stat()
                if self.seen.get(path) == (st.st_mtime_ns, st.st_size):
                    continue
                self.seen[path] = (st.st_mtime_ns, st.st_size)
                out.append((path, path.read_bytes()))
            except OSError as exc:                # removed or unreadable meanwhile: next round
                log.warning("cannot read CA file %s: %s", path, exc.strerror)
        return out

    def load(self, files: list[tuple[Path, bytes]]) -> int:
        """Add the certificates in `files` to the context; how many files were loaded."""
        loaded = 0
        for path, data in files:
            try:
                self.context.load_verify_locations(cadata=data.decode("ascii"))
                loaded += 1
            except (ssl.SSLError, ValueError, UnicodeDecodeError):
                log.warning("CA file %s holds no PEM certificate; not trusted for API clients", path)
        if loaded:
            log.info("API client certificates: %d CA file(s) loaded from %s", loaded, self.certs_dir)
        return loaded

    async def refresh(self, run_blocking: Callable[..., Awaitable[Any]]) -> int:
        return self.load(await run_blocking(self.changed))

    async def watch(self, run_blocking: Callable[..., Awaitable[Any]],
                    interval: float = RELOAD_SECONDS) -> None:
        """Refresh every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh(run_blocking)
            except Exception:                      # keep watching; the next round may succeed
                log.exception("reloading the API client CAs failed")


def tls_extension(ssl_object: ssl.SSLObject, server_cert: str | None) -> dict[str, Any]:
    """The ASGI TLS extension's scope entry for one TLS connection."""
    from bridge.crypto.usercerts import subject_rfc4514
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    return {"server_cert": server_cert,
            "client_cert_chain": (ssl.DER_cert_to_PEM_cert(der),) if der else (),
            "client_cert_name": subject_rfc4514(der) if der else None,
            "client_cert_error": None,
            "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": _suite_id(ssl_object.context, cipher[0]) if cipher else None}


def _suite_id(context: ssl.SSLContext, name: str) -> int | None:
    # get_ciphers() ids are OpenSSL's 0x0300XXXX; the low 16 bits are the IANA suite number.
    return next((c["id"] & 0xFFFF for c in context.get_ciphers() if c["name"] == name), None)


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol (uvicorn/protocols/http/h11_impl.py) that adds the ASGI TLS
    extension to the scope of every request on a TLS connection, and closes connections
    that do not send a request's head in time.

    asyncio calls `connection_made` after the TLS handshake, so the peer certificate is
    known there; the connection's app is wrapped once to put the extension in each scope
    (`handle_events` builds the scope and calls `self.app`).  `server_cert` is the PEM of
    the certificate the listener presents (set by `protocol_class`).

    uvicorn times out only an idle kept-alive connection (5 s after a response); a client
    that connects and sends nothing, or half a request line and header (slowloris), would
    hold its connection for ever.  So whenever the connection waits for a request's head
    (from the start, and when data comes after a response), it gets `HEAD_TIMEOUT` seconds
    to complete it, else 408 and the connection is closed (as Apache's RequestReadTimeout).
    """

    server_cert: str | None = None
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        # The spec forbids the extension without TLS.
        tls = tls_extension(ssl_object, self.server_cert) if ssl_object is not None else None
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            self._stop_head_timer()               # a whole head arrived: a request begins
            if tls is not None:
                scope.setdefault("extensions", {})["tls"] = dict(tls)
            await inner(scope, receive, send)
        self.app = app
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_head_timer()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
            return
        log.info("HTTP API: no complete request within %ss from %s; connection closed",
                 HEAD_TIMEOUT, self.client[0] if self.client else "?")
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"
                             b"connection: close\r\n\r\n")
        self.transport.close()


def protocol_class(cert_file: str) -> type[TlsH11Protocol]:
    """`TlsH11Protocol` for a listener presenting the first certificate of `cert_file`."""
    pem = Path(cert_file).read_text(encoding="ascii")
    end = "-----END CERTIFICATE-----"
    first = pem[pem.index("-----BEGIN CERTIFICATE-----"):pem.index(end) + len(end)] + "\n"
    return type("TlsH11Protocol", (TlsH11Protocol,), {"server_cert": first})


__all__ = ["ClientCAs", "HEAD_TIMEOUT", "RELOAD_SECONDS", "TlsH11Protocol", "protocol_class", "server_context",
           "tls_extension"]

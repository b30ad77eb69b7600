"""SMTP submission listeners: STARTTLS (RFC 6409 + RFC 3207) and implicit TLS (RFC 8314).

`BridgeSMTP` is aiosmtpd's SMTP with the safe settings made explicit
(auth_required, require_starttls on the STARTTLS listener; on the implicit-TLS
listener auth_require_tls must be False or aiosmtpd hides AUTH, issue #281,
and that socket is TLS from the first byte), a session id per connection,
every reply passed through replies.finish, no second STARTTLS inside TLS, and a
handle_exception that never sends exception text (aiosmtpd's default does), resets
the transaction, and logs a client's failed TLS handshake as such, not as our error.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
import warnings
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, TLSSetupException, syntax

from bridge.core.service import SessionInfo
from bridge.logs import install_aiosmtpd_filter, session_id as session_var
from bridge.smtpserver import replies as r
from bridge.smtpserver.handler import SubmissionHandler

log = logging.getLogger("bridge.smtp")
mail_log = logging.getLogger("mail.log")        # aiosmtpd's

# `<dot-atom@dot-atom>` with a plain host name, and what follows it: the form nearly every
# MAIL FROM / RCPT TO has.  aiosmtpd parses each with the email package's header parser
# (and defines a class per call); for this form that gives the address as written and the
# rest after its leading white space.  Anything else still goes to aiosmtpd's parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"[ \t]*<({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*")


# Open connections of this process, so that stopping can close them (asyncio's
# Server.close() in Python 3.11 leaves accepted connections open).
LIVE: "set[BridgeSMTP]" = set()


async def close_all() -> None:
    await asyncio.gather(*(conn.shutdown() for conn in list(LIVE)), return_exceptions=True)


def new_session_id() -> str:
    return secrets.token_hex(6)


class BridgeSMTP(SMTP):
    def __init__(self, handler: SubmissionHandler, *, implicit_tls: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.session_id = new_session_id()
        self.implicit_tls = implicit_tls
        self.auth_failures = 0
        self._greeted = False
        self._in_ehlo = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        session_var.set(self.session_id)          # copied into the session task's context
        if not self._greeted:
            log.info("connection from %s", _ip(transport))
            LIVE.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        LIVE.discard(self)
        super().connection_lost(error)

    async def shutdown(self) -> None:
        """Close this connection now (server stopping); a transaction in progress is lost
        unanswered, which the client treats as a temporary failure."""
        task = self._handler_coroutine
        if task is not None and not task.done():
            task.cancel()
        if self.transport is not None:
            self.transport.close()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def session_info(self) -> SessionInfo:
        tls = self.implicit_tls or self._tls_protocol is not None
        return SessionInfo(self.session_id, "smtp", _ip(self.transport), tls)

    def close_connection(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def push(self, status: Any) -> None:
        line = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if self._in_ehlo and line.startswith("250"):
            return await super().push(line)
        line = r.finish(line, self.session_id, greeting=not self._greeted)
        self._greeted = True
        await super().push(line)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _SIMPLE_PATH.match(arg)
        rest = arg[match.end():] if match else ""
        if match is None or rest.startswith("("):          # a comment: the full parser
            return super()._getaddr(arg)
        local = match.group(1)
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return f"{local}@{match.group(2)}", rest

    def _getparams(self, params: list[str]) -> dict[str, Any] | None:
        """aiosmtpd's MAIL parameters, without RFC 4865's HOLDFOR/HOLDUNTIL, which
        handle_MAIL reads (aiosmtpd would refuse them as unknown)."""
        found = super()._getparams(params)
        if found is not None:
            found.pop("HOLDFOR", None)
            found.pop("HOLDUNTIL", None)
        return found

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd 1.4.6's smtp_DATA with the same replies, limits and end-of-data rule (a
        line that is exactly ".\\r\\n"; CVE-2024-27305), but a whole line that fits, the
        usual case, costs a few operations instead of aiosmtpd's general path (fragments
        joined twice, a bytearray per line, a debug call per line): 4.6% of the server's
        GIL samples in bench/submit.py.  Lines after an overlong one, and the rest, take
        the general path unchanged.  The handler's handle_DATA is called as aiosmtpd
        would (this handler has no process_message)."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data: list[bytes] = []
        num_bytes = 0
        limit = self.data_size_limit
        max_line = self.line_length_limit
        fragments: list[bytes] = []
        nominal, too_long, too_much = "nominal", "too long", "too much"
        state = nominal
        readuntil = self._reader.readuntil
        debug = mail_log.isEnabledFor(logging.DEBUG)
        while self.transport is not None:
            try:
                line = await readuntil(b"\r\n")
                if debug:
                    mail_log.debug("DATA readline: %s", line)
            except asyncio.CancelledError:
                mail_log.info("Connection lost during DATA")
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as e:
                # A line longer than the reader's limit: drained, refused at the end.
                if state is nominal:
                    state = too_long
                data.clear()
                line = await self._reader.read(e.consumed)
            else:
                if not fragments:                   # a whole line (it ends with CRLF)
                    if line == b".\r\n":
                        break
                    num_bytes += len(line)
                    if state is nominal:
                        if limit and num_bytes > limit:
                            state = too_much
                            data.clear()
                        elif len(line) > max_line:
                            state = too_long
                            data.clear()
                        else:
                            data.append(line)
                    continue
            # The general path, as aiosmtpd: the pieces of an overlong line, and what follows.
            if not fragments and line == b".\r\n":
                break
            num_bytes += len(line)
            if state is nominal and limit and num_bytes > limit:
                state = too_much
                data.clear()
            fragments.append(line)
            if line.endswith(b"\r\n"):
                if state is nominal:
                    whole = b"".join(fragments)
                    if len(whole) > max_line:
                        state = too_long
                        data.clear()
                    else:
                        data.append(whole)
                fragments.clear()
        if state is not nominal:
            if state is too_long:
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            else:
                await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        # RFC 5321 section 4.5.2: a leading dot is removed (dot-stuffing undone).
        original_content = b"".join([text[1:] if text[:1] == b"." else text for text in data])
        data.clear()
        self.envelope.content = original_content          # decode_data=False
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207 section 4.2: no second handshake inside TLS (aiosmtpd would start one).
        if self.implicit_tls or self._tls_protocol is not None:
            await self.push(str(r.R503_TLS_ACTIVE))
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):   # the client's handshake failed: not our bug
            log.info("TLS handshake failed: %s", error.__cause__ or error)
            return str(r.R451_INTERNAL)            # not sent: aiosmtpd closes the connection
        log.error("internal error in SMTP session", exc_info=error)
        self._set_rset_state()
        return str(r.R451_INTERNAL)


def _ip(transport: Any) -> str:
    peer = transport.get_extra_info("peername") if transport else None
    return str(peer[0]) if peer else "unknown"


async def start_listeners(handler: SubmissionHandler, tls_context: ssl.SSLContext, hostname: str,
                          starttls: list[tuple[str, int]], implicit: list[tuple[str, int]],
                          max_message_size: int, timeout: int) -> list[asyncio.AbstractServer]:
    """Start every submission listener; returns the servers (their sockets tell the ports)."""
    install_aiosmtpd_filter()
    loop = asyncio.get_running_loop()
    common = dict(data_size_limit=max_message_size, hostname=hostname, ident="dp2bridge ESMTP",
                  decode_data=False, enable_SMTPUTF8=True, auth_required=True, timeout=timeout,
                  loop=loop)

    def starttls_factory() -> BridgeSMTP:
        return BridgeSMTP(handler, implicit_tls=False, tls_context=tls_context, require_starttls=True,
                          auth_require_tls=True, **common)

    def implicit_factory() -> BridgeSMTP:
        # aiosmtpd #281: auth_require_tls=True would hide AUTH; this socket is TLS from byte one,
        # so aiosmtpd's warning about AUTH without TLS does not apply here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return BridgeSMTP(handler, implicit_tls=True, auth_require_tls=False, **common)

    servers = [await loop.create_server(starttls_factory, host, port, reuse_address=True)
               for host, port in starttls]
    servers += [await loop.create_server(implicit_factory, host, port, ssl=tls_context,
                                         reuse_address=True) for host, port in implicit]
    return servers

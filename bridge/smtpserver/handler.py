"""The aiosmtpd handler: translates SMTP commands into core use cases.

AUTH PLAIN and LOGIN are implemented here (not aiosmtpd's built-ins, which
ignore the PLAIN authorization identity): the authzid must be empty or equal
to the login.  Failed logins are delayed and counted (core/throttle.py) and the
connection is closed after too many.  MAIL checks the envelope sender, RCPT
each recipient, DATA the message and the header From, and accepts it durably
before `250 2.0.0 OK <uuid>`.  Every BridgeError becomes its reply through
replies.reply_for; anything else reaches BridgeSMTP.handle_exception.
"""

from __future__ import annotations

import datetime as dt

import asyncio
import logging
from base64 import b64decode
from typing import Any, Awaitable, Callable

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, Session

from bridge.core import identities as ids
from bridge.core.service import BridgeService, SessionInfo
from bridge.errors import AuthenticationFailed, AuthorizationIdentityRefused, BridgeError
from bridge.smtpserver import replies as r

log = logging.getLogger("bridge.smtp")


class SubmissionHandler:
    def __init__(self, service: BridgeService, run_blocking: Callable[..., Awaitable[Any]],
                 max_recipients: int, max_failures: int) -> None:
        self.service = service
        self.run_blocking = run_blocking
        self.max_recipients = max_recipients
        self.max_failures = max_failures

    # --- EHLO ----------------------------------------------------------------------

    async def handle_EHLO(self, server: Any, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [line for line in responses if line[4:] != "HELP"]
        lines += ["250-PIPELINING",                               # RFC 2920
                  f"250-FUTURERELEASE {MAX_HOLD_SECONDS} "            # RFC 4865
                  f"{_rfc3339(_now() + dt.timedelta(seconds=MAX_HOLD_SECONDS))}",
                  "250 ENHANCEDSTATUSCODES"]                          # RFC 2034
        return [line.replace("250 ", "250-", 1) if i < len(lines) - 1 else line
                for i, line in enumerate(lines)]

    # --- AUTH ------------------------------------------------------------------------

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        blob = await self._initial_or_challenge(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:                          # RFC 4616: [authzid] NUL authcid NUL passwd
            await server.push(str(r.R501_BAD_AUTH_DATA))
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, parts[1], parts[2], parts[0])

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        login = await self._initial_or_challenge(server, args, "Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._challenge(server, "Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, login, password, b"")

    async def _initial_or_challenge(self, server: Any, args: list[str], prompt: str) -> bytes | None:
        if len(args) == 1:
            return await self._challenge(server, prompt)
        if args[1] == "=":                            # RFC 4954: "=" is an empty initial response
            return b""
        try:
            return b64decode(args[1].encode(), validate=True)
        except Exception:
            await server.push(str(r.R501_BAD_AUTH_DATA))
            return None

    async def _challenge(self, server: Any, prompt: str) -> bytes | None:
        answer = await server.challenge_auth(prompt)
        return None if answer is MISSING else answer

    async def _authenticate(self, server: Any, login_b: bytes, password_b: bytes,
                            authzid_b: bytes) -> AuthResult:
        try:
            login, password = login_b.decode("utf-8"), password_b.decode("utf-8")
            authzid = authzid_b.decode("utf-8")
        except UnicodeDecodeError:
            login, password, authzid = login_b.decode("utf-8", "replace"), "\x00invalid", ""
        ctx = server.session_info()
        try:
            principal = await self.run_blocking(self.service.authenticate, login, password, ctx, authzid)
        except (AuthenticationFailed, AuthorizationIdentityRefused) as exc:
            return await self._auth_failed(server, ctx, login, exc)
        except Exception:
            # RFC 4954 section 6: a temporary server failure during AUTH is 454 4.7.0.
            log.exception("authentication could not be checked")
            return AuthResult(success=False, handled=False, message=str(r.R454_AUTH_UNAVAILABLE))
        server.auth_failures = 0
        log.info("authenticated %s", principal.login)
        return AuthResult(success=True, auth_data=principal)

    async def _auth_failed(self, server: Any, ctx: SessionInfo, login: str, exc: BridgeError) -> AuthResult:
        server.auth_failures += 1
        log.info("authentication failed for %r from %s (%d on this connection)",
                 login[:100], ctx.ip, server.auth_failures)
        await asyncio.sleep(self.service.failure_delay(ctx.ip, login, server.auth_failures))
        if server.auth_failures >= self.max_failures:
            await server.push(str(r.R421_TOO_MANY_FAILURES))
            server.close_connection()
            return AuthResult(success=False, handled=True)
        reply = r.R535_AUTHZID if isinstance(exc, AuthorizationIdentityRefused) else r.R535_AUTH_FAILED
        return AuthResult(success=False, handled=False, message=str(reply))

    # --- transaction -------------------------------------------------------------------

    async def handle_MAIL(self, server: Any, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        try:
            # The check itself is pure (core.identities): an allowed sender needs no thread hop.
            # Anything else takes the service's path, which also records the refusal.
            sender = ids.check_sender(session.auth_data, address)
        except Exception:
            try:
                sender = await self.run_blocking(self.service.check_mail_from, session.auth_data, address,
                                                 server.session_info())
            except BridgeError as exc:
                return self._refusal(exc)
        try:
            envelope.hold_until = future_release(mail_options, _now())
        except ValueError as exc:
            return f"501 5.5.4 {exc}"
        envelope.mail_from = sender
        envelope.mail_options.extend(mail_options)
        envelope.targets = []
        envelope.refused = []            # (address, status, reason): owed SubmissionRejection receipts
        return str(r.R250_SENDER_OK)

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return str(r.R452_TOO_MANY_RECIPIENTS)
        try:
            target = await self.run_blocking(self.service.check_rcpt, session.auth_data, address,
                                             server.session_info())
        except BridgeError as exc:
            if not exc.temporary:
                envelope.refused.append((address.lower()[:320], exc.enhanced, exc.public))
            return self._refusal(exc)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.targets.append((address.lower(), target))
        return str(r.R250_RECIPIENT_OK)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content   # bare CR/LF (smuggling) is refused by service.submit
        try:
            accepted = await self.run_blocking(self.service.submit, session.auth_data, envelope.mail_from,
                                               envelope.targets, raw, server.session_info(),
                                               envelope.refused, envelope.hold_until)
        except BridgeError as exc:
            return self._refusal(exc)
        log.info("accepted %s (%d bytes)%s", accepted.uuid, len(raw),
                 " duplicate" if accepted.duplicate else "")
        return str(r.r250_accepted(accepted.uuid, accepted.duplicate))

    def _refusal(self, exc: BridgeError) -> str:
        reply = r.reply_for(exc)
        if reply.code == 451:
            log.error("temporary failure: %s", exc)
        else:
            log.info("refused %d %s: %s", reply.code, reply.enhanced, exc)
        return str(reply)


# RFC 4865 FUTURERELEASE: a message may be held for delivery up to this long.
MAX_HOLD_SECONDS = 30 * 24 * 3600


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def future_release(mail_options: list[str], now: dt.datetime) -> dt.datetime | None:
    """The release time a MAIL FROM's HOLDFOR=<seconds> or HOLDUNTIL=<RFC 3339 time> asks for
    (RFC 4865), or None; ValueError with a text for the client if it is malformed or too far."""
    hold = [o for o in mail_options if o.upper().startswith(("HOLDFOR=", "HOLDUNTIL="))]
    if not hold:
        return None
    if len(hold) > 1:
        raise ValueError("give HOLDFOR or HOLDUNTIL once, not both")
    name, _, value = hold[0].partition("=")
    if name.upper() == "HOLDFOR":
        if not value.isdigit():
            raise ValueError("HOLDFOR takes a number of seconds (RFC 4865)")
        until = now + dt.timedelta(seconds=int(value))
    else:
        try:
            until = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("HOLDUNTIL takes a time like 2026-12-24T09:00:00Z (RFC 3339)") from None
        if until.tzinfo is None:
            raise ValueError("HOLDUNTIL needs a time zone, e.g. 2026-12-24T09:00:00Z")
    if until - now > dt.timedelta(seconds=MAX_HOLD_SECONDS):
        raise ValueError(f"a message can be held for at most {MAX_HOLD_SECONDS} seconds (30 days)")
    return until if until > now else None

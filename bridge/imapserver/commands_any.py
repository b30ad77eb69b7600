"""Commands valid in any state, and authentication: CAPABILITY, NOOP, LOGOUT, ID, ENABLE,
STARTTLS, LOGIN, AUTHENTICATE PLAIN (RFC 4616, with SASL-IR RFC 4959).

Failed logins look the same whatever the reason (NO [AUTHENTICATIONFAILED]), are
delayed by the shared throttle, and close the connection after too many;
LOGIN and AUTHENTICATE are refused before TLS (LOGINDISABLED).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING

from bridge.errors import AuthenticationFailed, AuthorizationIdentityRefused
from bridge.imapserver.errors import Bad, No
from bridge.imapserver.parser import Reader
from bridge.imapserver.registry import ANSWERED, ANY, AUTHENTICATED, NOT_AUTHENTICATED, command

if TYPE_CHECKING:
    from bridge.imapserver.session import ImapSession

log = logging.getLogger("bridge.imap")
NOT_AUTH = frozenset({NOT_AUTHENTICATED})


@command("CAPABILITY", ANY)
async def capability(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    s.untagged(b"CAPABILITY " + s.capabilities().encode())


@command("NOOP", ANY)
async def noop(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    await s.sync()


@command("CHECK", frozenset({"selected"}))
async def check(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    await s.sync()


@command("LOGOUT", ANY)
async def logout(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    args.end()
    s.untagged(b"BYE dp2bridge logging out")
    s.unselect()
    s.logout = True


@command("ID", ANY)
async def id_(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    # RFC 2971: the client's ID is only logged; we name ourselves, nothing more.
    if args.has_list():
        fields = args.list_tokens("ID parameters")
        log.info("client id: %s", [f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f)
                                   for f in fields][:20])
    else:
        args.next("ID parameters")
    args.end()
    s.untagged(b'ID ("name" "dp2bridge" "vendor" "dp2bridge")')


@command("ENABLE", frozenset({AUTHENTICATED, "selected"}))
async def enable(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> None:
    # RFC 5161; IMAP4rev2 and CONDSTORE/QRESYNC (RFC 7162) are the extensions that need it.
    known = {"CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT"}
    enabled = []
    while not args.at_end():
        name = args.atom("capability").upper()
        if name in known and name not in s.enabled:
            s.enabled.add(name)
            if name == "QRESYNC":
                s.enabled.add("CONDSTORE")
            enabled.append(name)
    s.untagged(b"ENABLED" + b"".join(b" " + n.encode() for n in enabled))


@command("STARTTLS", NOT_AUTH)
async def starttls(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> object:
    args.end()
    if s.conn.tls:
        raise Bad("TLS is already active")
    await s.conn.send(tag + b" OK Begin TLS negotiation now")
    await s.conn.start_tls(s.ctx.tls_context)
    return ANSWERED


def _require_tls(s: "ImapSession") -> None:
    if not s.conn.tls:
        raise No("log in only after STARTTLS (LOGINDISABLED)", "PRIVACYREQUIRED")


@command("LOGIN", NOT_AUTH)
async def login(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    user, password = args.text("user name"), args.text("password")
    args.end()
    _require_tls(s)
    return await _authenticate(s, user, password, "")


@command("AUTHENTICATE", NOT_AUTH)
async def authenticate(s: "ImapSession", tag: bytes, args: Reader, uid: bool) -> str:
    mechanism = args.atom("mechanism").upper()
    initial = args.atom("initial response") if not args.at_end() else None
    args.end()
    _require_tls(s)
    if mechanism != "PLAIN":
        raise No("only AUTHENTICATE PLAIN is supported", "CANNOT")
    if initial is None:
        await s.conn.send(b"+ ")
        initial = (await s.conn.read_line()).rstrip(b"\r\n").decode("ascii", "replace")
        if initial == "*":
            raise Bad("authentication cancelled")
    try:
        blob = b"" if initial == "=" else base64.b64decode(initial, validate=True)
        authzid, user, password = blob.split(b"\x00")
        return await _authenticate(s, user.decode(), password.decode(), authzid.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Bad("cannot decode the authentication data") from None


async def _authenticate(s: "ImapSession", user: str, password: str, authzid: str) -> str:
    try:
        s.principal = await s.blocking(s.ctx.service.authenticate, user, password, s.info(), authzid)
    except (AuthenticationFailed, AuthorizationIdentityRefused):
        s.auth_failures += 1
        await asyncio.sleep(s.ctx.service.failure_delay(s.conn.ip, user, s.auth_failures))
        if s.auth_failures >= s.ctx.max_failures:
            s.logout = True
            s.untagged(b"BYE too many failed logins")
        raise No("authentication failed", "AUTHENTICATIONFAILED") from None
    s.state = AUTHENTICATED
    s.conn.authenticated = True
    log.info("authenticated %s", s.principal.login)
    return f"[CAPABILITY {s.capabilities()}] logged in"

"""IMAP errors: the one place where failures become BAD or NO [CODE] (STYLE.md section 3).

Command modules raise `Bad` (syntax: BAD) or `No` (policy or state: NO with an
RFC 5530 response code).  A BridgeError from core becomes NO with its public
text; anything else is a server bug, answered `NO [SERVERBUG] internal error
(ref S)` by the session after logging it.  Every NO and BAD ends with
`(ref <session id>)`.
"""

from __future__ import annotations

from bridge import errors as e


class ImapError(Exception):
    status = "NO"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class Bad(ImapError):
    status = "BAD"


class No(ImapError):
    status = "NO"


# RFC 5530 response codes for core errors.
_CODES: list[tuple[type[e.BridgeError], str]] = [
    (e.AuthenticationFailed, "AUTHENTICATIONFAILED"),
    (e.AuthorizationIdentityRefused, "AUTHORIZATIONFAILED"),
    (e.NotFound, "NONEXISTENT"),
    (e.AlreadyExists, "ALREADYEXISTS"),
    (e.MessageTooBig, "TOOBIG"),
    (e.PolicyError, "NOPERM"),
    (e.MessageRejected, "CANNOT"),
    (e.StorageUnavailable, "UNAVAILABLE"),
]


def from_bridge_error(exc: e.BridgeError) -> No:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return No(exc.public, code)
    return No(exc.public, "UNAVAILABLE" if exc.temporary else "CANNOT")


NONEXISTENT = No("no such mailbox", "NONEXISTENT")

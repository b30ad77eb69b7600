"""SMTP replies: the one place where errors become codes and texts (STYLE.md section 3).

`reply_for` maps a BridgeError to its reply.  `finish` is applied to every
reply line the server sends: it adds an RFC 3463 enhanced status code where
aiosmtpd's built-in replies lack one (RFC 2034 ENHANCEDSTATUSCODES) and ends
every 4xx/5xx with `(ref <session id>)`, the id found on every log line and
audit event of that session.  Imports no aiosmtpd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge import errors as e


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


R250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
R250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
R451_INTERNAL = Reply(451, "4.3.0", "Internal error; nothing was accepted, please try again later")
R452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", e.TooManyRecipients.public)
R421_TOO_MANY_FAILURES = Reply(421, "4.7.0", "Too many failed logins on this connection, goodbye")
R454_AUTH_UNAVAILABLE = Reply(454, "4.7.0", "Temporary authentication failure, please try again later")
R501_BAD_AUTH_DATA = Reply(501, "5.5.2", "Cannot decode the authentication data")
R503_TLS_ACTIVE = Reply(503, "5.5.1", "TLS is already active on this connection")
R535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R535_AUTHZID = Reply(535, "5.7.1", e.AuthorizationIdentityRefused.public)
R554_BARE_LINE_ENDING = Reply(554, "5.6.0", e.BareLineEnding.public)


def r250_accepted(message_uuid: str, duplicate: bool) -> Reply:
    note = " (already accepted earlier)" if duplicate else ""
    return Reply(250, "2.0.0", f"OK {message_uuid}{note}")


# Most specific first.
_CODES: list[tuple[type[e.BridgeError], int]] = [
    (e.AuthorizationIdentityRefused, 535), (e.AuthenticationFailed, 535),
    (e.TooManyRecipients, 452), (e.MessageTooBig, 552), (e.MessageRejected, 554),
    (e.PolicyError, 550), (e.StorageUnavailable, 451),
]


def reply_for(exc: e.BridgeError) -> Reply:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return Reply(code, exc.enhanced, exc.public)
    return R451_INTERNAL


# Enhanced codes for aiosmtpd's built-in replies that carry none (RFC 3463).
_DEFAULT_ENHANCED = {
    "221": "2.0.0", "220": "2.0.0", "250": "2.0.0", "235": "2.7.0",
    "421": "4.7.0", "451": "4.3.0", "452": "4.5.3", "454": "4.7.0",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "535": "5.7.8", "538": "5.7.11", "550": "5.7.1", "552": "5.3.4",
    "553": "5.1.3", "554": "5.7.0", "555": "5.5.4",
}
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")
# Built-in texts that would puzzle a person, replaced by plain words.
_PLAIN = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds the limit announced in EHLO (SIZE)",
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds the limit announced in EHLO (SIZE)",
    "554 Command refused due to lack of security": "554 5.7.0 TLS negotiation failed",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
}


_UNKNOWN_COMMAND = re.compile(r'^500 Error: command ".*" not recognized$')


def finish(line: str, session_id: str, *, greeting: bool = False) -> str:
    """The reply line as sent: enhanced code added, `(ref S)` appended to 4xx/5xx."""
    line = _PLAIN.get(line, line)
    if _UNKNOWN_COMMAND.match(line):     # do not echo the line: it may be a stray password
        line = "500 5.5.2 Command not recognized"
    code, sep, text = line[:3], line[3:4], line[4:]
    if greeting or not code.isdigit() or sep == "-" or code in ("334", "354"):
        return line
    if code[0] in "2345" and not _HAS_ENHANCED.match(text) and code in _DEFAULT_ENHANCED:
        text = f"{_DEFAULT_ENHANCED[code]} {text}"
    line = f"{code} {text}"
    if code[0] in "45" and "(ref " not in line:
        line = f"{line} (ref {session_id})"
    return line

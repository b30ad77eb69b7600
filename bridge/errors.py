"""The BridgeError tree: every error a client may be told about.

Each class carries `public`, the only text a client ever sees, and `temporary`
(4xx vs 5xx).  Front ends translate these into protocol replies in exactly one
place (smtpserver/replies.py, imapserver/errors.py); anything that is not a
BridgeError is a server bug and is answered with a generic text plus the
session reference.  Imports nothing from the project.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class.  `public` is client-safe; str(self) may hold details for logs."""

    public = "internal error"
    temporary = True
    # RFC 3463 enhanced status code used by SMTP for this error.
    enhanced = "4.3.0"

    def __init__(self, detail: str = "", *, public: str | None = None) -> None:
        super().__init__(detail or self.public)
        if public is not None:
            self.public = public


# --- configuration and admin -------------------------------------------------

class ConfigError(BridgeError):
    """A configuration file has problems; `problems` lists every one, with its key."""

    public = "configuration error"
    temporary = False

    def __init__(self, path: object, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(problems))


class AdminError(BridgeError):
    """An admin command cannot be done; the text says what to do instead."""

    temporary = False

    def __init__(self, text: str) -> None:
        super().__init__(text, public=text)


class NotFound(AdminError):
    pass


class AlreadyExists(AdminError):
    pass


# --- authentication ----------------------------------------------------------

class AuthenticationFailed(BridgeError):
    """Unknown user, wrong password, disabled account or tenant: all look the same."""

    public = "authentication failed"
    temporary = False
    enhanced = "5.7.8"


class AuthorizationIdentityRefused(BridgeError):
    public = "the authorization identity must be empty or equal to your login"
    temporary = False
    enhanced = "5.7.1"


# --- sending policy (550 5.7.1 / 550 5.1.1) -----------------------------------

class PolicyError(BridgeError):
    temporary = False
    enhanced = "5.7.1"


class SenderNotAllowed(PolicyError):
    public = "sender address does not belong to the authenticated user"


class HeaderFromNotAllowed(PolicyError):
    public = "the From header address does not belong to the authenticated user"


class HeaderFromInvalid(PolicyError):
    public = "the message must have exactly one From header with exactly one address"


class RecipientNotAllowed(PolicyError):
    public = "you may not send to this recipient"


class UnknownRecipient(PolicyError):
    public = "no such recipient here"
    enhanced = "5.1.1"


class RecipientDisabled(PolicyError):
    """The recipient's account is disabled (`dp2bridge account disable`): RCPT is refused,
    and a message accepted before is not filed (a ContentConsignmentFailure receipt)."""

    public = "the recipient's mailbox is disabled"
    enhanced = "5.2.1"


class ForeignDomain(PolicyError):
    public = "this bridge delivers Digital Post only; the recipient domain is not served here"
    enhanced = "5.1.2"


class TooManyRecipients(BridgeError):
    public = "too many recipients for one message"
    temporary = True
    enhanced = "4.5.3"


# --- message content (554 5.6.x) -----------------------------------------------

class MessageRejected(BridgeError):
    temporary = False
    enhanced = "5.6.0"


class BareLineEnding(MessageRejected):
    public = "message contains a bare CR or LF; every line must end with CRLF"


class HeaderTooLarge(MessageRejected):
    public = "the message header section is too large"
    enhanced = "5.6.0"


class TooManyHeaders(MessageRejected):
    public = "the message has too many header fields"


class MimeTooDeep(MessageRejected):
    public = "the message's MIME structure is nested too deeply"


class MalformedMessage(MessageRejected):
    public = "the message is not a well-formed RFC 5322 message"


class MessageTooBig(MessageRejected):
    public = "message size exceeds the limit"
    enhanced = "5.3.4"


# --- storage -----------------------------------------------------------------

class StorageUnavailable(BridgeError):
    """The store or the disk failed (full, I/O error); try again later."""

    public = "temporary local problem, please try again later"
    temporary = True
    enhanced = "4.3.0"

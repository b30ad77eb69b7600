"""Logging: named loggers per concern, a session id on every line, secrets kept out.

Every record carries `session=<id>` from a contextvar set when a protocol
session starts (mox WithCid).  Protocol transcripts are logged only at TRACE
(below DEBUG).  aiosmtpd's own logger ("mail.log") logs DATA lines and, in
challenge_auth, AUTH LOGIN responses at DEBUG: `AiosmtpdFilter` drops those
records always (AUTH payloads) or below TRACE (message content), so a password
never reaches a log, plain or base64, whatever the level.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

session_id: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")

_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "error": logging.ERROR}
FORMAT = "%(asctime)s %(levelname)s %(name)s session=%(session)s %(message)s"


class SessionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session = session_id.get()
        return True


class AiosmtpdFilter(logging.Filter):
    """Drops aiosmtpd records that may contain AUTH payloads or message content."""

    ALWAYS_DROP = {"challenge_auth", "_auth_interact"}
    # Deliberate choices of ours that aiosmtpd warns about on every connection.
    NOISE = ("Session.login_data", "auth_required == True but auth_require_tls == False")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName in self.ALWAYS_DROP or str(record.msg).startswith(self.NOISE):
            return False
        if record.args and ("unrecognised" in str(record.msg) or record.funcName == "sanitized_log"):
            record.args = tuple(_mask_unknown_command(a) for a in record.args)
        if record.levelno <= logging.DEBUG and not logging.getLogger("bridge").isEnabledFor(TRACE):
            return False
        return "AUTH" not in str(record.msg).upper() or record.levelno > logging.INFO


SMTP_VERBS = {b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT", b"STARTTLS",
              b"AUTH", b"VRFY", b"EXPN", b"HELP"}


def _mask_unknown_command(arg: Any) -> Any:
    """aiosmtpd logs every command line (and the word of an unknown one).  A client out of
    step may send a base64 password as a line, so a line that does not start with an SMTP
    verb is logged only by its length."""
    if isinstance(arg, str):
        return arg if arg.encode().upper() in SMTP_VERBS else f"<{len(arg)} characters>"
    if isinstance(arg, (bytes, bytearray)):
        verb = bytes(arg).split(b" ", 1)[0].strip().upper()
        return arg if verb in SMTP_VERBS else f"<{len(arg)} bytes>"
    return arg


def install_aiosmtpd_filter() -> None:
    """Idempotent; called by setup_logging and when the SMTP listeners start."""
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, AiosmtpdFilter) for f in logger.filters):
        logger.addFilter(AiosmtpdFilter())


def install_filters(handler: logging.Handler) -> None:
    handler.addFilter(SessionFilter())
    install_aiosmtpd_filter()


def setup_logging(level: str = "info", file: str = "", levels: dict[str, str] | None = None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    install_filters(handler)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # aiosmtpd logs every command at INFO; keep it one step quieter than ours unless tracing.
    logging.getLogger("mail.log").setLevel(TRACE if level == "trace" else max(_LEVELS[level], logging.WARNING))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name, lvl in (levels or {}).items():
        logging.getLogger(name).setLevel(_LEVELS[lvl])


def trace(logger: logging.Logger, msg: str, *args: Any) -> None:
    if logger.isEnabledFor(TRACE):
        logger.log(TRACE, msg, *args)

"""smtplib helpers: TLS clients that trust the test home's CA, and message builders."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import time
import uuid
from base64 import b64encode
from typing import Any, Callable

from tests.conftest import PASSWORDS, RunningBridge


def tls_context(bridge: RunningBridge) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=bridge.ca_file)


def connect(bridge: RunningBridge, implicit: bool = False) -> smtplib.SMTP:
    """A client after EHLO (and STARTTLS unless implicit TLS), not yet authenticated."""
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL("localhost", bridge.smtps_port,
                                                context=tls_context(bridge), timeout=30)
    else:
        client = smtplib.SMTP("localhost", bridge.smtp_port, timeout=30)
        client.starttls(context=tls_context(bridge))
    client.ehlo("client.test")
    return client


def login(bridge: RunningBridge, user: str, implicit: bool = False) -> smtplib.SMTP:
    client = connect(bridge, implicit)
    client.login(user, PASSWORDS[user])
    return client


def message(sender: str, to: str, subject: str = "Test", body: str = "Hej\r\n",
            message_id: str | None = None, extra: str = "") -> bytes:
    mid = message_id or f"<{uuid.uuid4()}@client.test>"
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
            f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n{extra}MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def send(client: smtplib.SMTP, sender: str, to: str, raw: bytes) -> str:
    """Send to one recipient; the message UUID from `250 2.0.0 OK <uuid>`."""
    client.mail(sender)
    code, _ = client.rcpt(to)
    assert code == 250
    code, reply = client.data(raw)
    assert code == 250, reply
    text = reply.decode()
    assert text.startswith("2.0.0 OK ")
    return text.split()[2]


def settled(bridge: RunningBridge) -> None:
    """Wait until nothing is left to do: no delivery pending, no receipt owed, and no audit
    head moving for a moment (receipts are issued after deliveries, by their own worker,
    and append events of their own)."""
    from bridge.store.receipts import ReceiptRepository
    repo = ReceiptRepository(bridge.store)
    seen: list[Any] = []

    def still() -> bool:
        owed = sum(1 for r in repo.receipts() if r["state"] in ("queued", "running"))
        seen.append((bridge.store.pending_jobs(), owed, bridge.store.audit_heads()))
        return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1][:2] == (0, 0)
    wait_for(still, timeout=10, interval=0.2)


def wait_for(predicate: Callable[[], Any], timeout: float = 2.0, interval: float = 0.02) -> Any:
    """The first truthy value of predicate() within `timeout` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def assert_no_secret_in_logs(secrets: list[str], records: list[logging.LogRecord], text: str = "") -> None:
    """No password appears in any log record or captured text, plain or base64 (alone, in
    AUTH PLAIN form or in AUTH LOGIN form)."""
    forms: list[str] = []
    for secret in secrets:
        raw = secret.encode()
        forms += [secret, b64encode(raw).decode()]
        for login in PASSWORDS:
            forms.append(b64encode(b"\0" + login.encode() + b"\0" + raw).decode())
    haystack = text + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)
    for form in forms:
        assert form not in haystack, f"a secret leaked into the logs: {form[:6]}..."


INTERNALS = re.compile(r"Traceback|Errno|\.py\b|\b[A-Za-z_]\w*(?:Error|Exception)\b")


def expect(reply: tuple[int, bytes], code: int, enhanced: str, internals: re.Pattern[str] = INTERNALS) -> str:
    """The reply text, after checking code, enhanced code, `(ref S)` on 4xx/5xx and that no
    internals (exception names, tracebacks, file names) reach the client."""
    got, raw = reply
    text = raw.decode("utf-8", "replace")
    assert (got, text.split(" ", 1)[0]) == (code, enhanced), reply
    if code >= 400:
        assert re.search(r" \(ref [0-9a-f]{12}\)$", text), reply
    assert not internals.search(text.split(" (ref ")[0]), reply
    return text


def data_reply(client: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    """DATA with `raw` sent as is (smtplib only dot-stuffs bytes; it does not fix line ends),
    returning the reply whether it is a success or a refusal."""
    try:
        return client.data(raw)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error

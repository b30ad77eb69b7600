"""Size and shape limits over real SMTP+TLS: a big attachment goes through byte-exact, and
every limit answers with its own code, enhanced code and plain words, leaving the connection
usable for the next transaction.  Acceptance point 9.
"""

from __future__ import annotations

import base64
import hashlib
import os
import smtplib
from pathlib import Path
from typing import Iterator

import pytest

from bridge.clock import SystemClock
from bridge.core.admin import Admin
from tests.conftest import ANNA, JOBCENTER, RunningBridge, make_home, start_bridge
from tests.helpers.smtp import data_reply, expect, login, message

BORGERSERVICE = "borgerservice@kommune.dp2.test"

# Limits of the `limited` bridge.
MAX_SIZE = 64 * 1024
MAX_RECIPIENTS = 2
MAX_HEADER_BYTES = 4096
MAX_HEADER_COUNT = 30
MAX_MIME_DEPTH = 3


@pytest.fixture
def limited(tmp_path: Path, db: str) -> Iterator[RunningBridge]:
    """A bridge with small limits, on SQLite and PostgreSQL."""
    config = make_home(tmp_path, db, smtp={
        "max_message_size": MAX_SIZE, "max_recipients": MAX_RECIPIENTS,
        "max_header_bytes": MAX_HEADER_BYTES, "max_header_count": MAX_HEADER_COUNT,
        "max_mime_depth": MAX_MIME_DEPTH})
    running = start_bridge(config)
    try:
        yield running
    finally:
        running.stop()


def transaction(client: smtplib.SMTP, sender: str, rcpt: str, raw: bytes) -> tuple[int, bytes]:
    expect(client.mail(sender), 250, "2.1.0")
    expect(client.rcpt(rcpt), 250, "2.1.5")
    return data_reply(client, raw)


def accepted(bridge: RunningBridge) -> list[dict]:
    return [e for e in bridge.store.audit_events() if e["kind"] == "submit.accepted"]


def with_attachment(payload: bytes) -> bytes:
    """A realistic message: a short text and a base64 PDF attachment, 76-character lines."""
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return message(f"Anna <{ANNA}>", f"Jobcenter <{JOBCENTER}>", "Dokumentation til min sag",
                   body="", extra="").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b'Content-Type: multipart/mixed; boundary="=_part_7f3a"\r\n\r\n'
        b"This is a multi-part message in MIME format.\r\n"
        b"--=_part_7f3a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Hej,\r\n\r\nHer er dokumentationen.\r\n\r\nAnna\r\n"
        b'--=_part_7f3a\r\nContent-Type: application/pdf; name="dokumentation.pdf"\r\n'
        b'Content-Disposition: attachment; filename="dokumentation.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--=_part_7f3a--\r\n")


def test_20_mib_attachment_is_stored_byte_exact(sqlite_bridge: RunningBridge) -> None:
    raw = with_attachment(b"%PDF-1.7\n" + os.urandom(20 * 1024 * 1024))
    assert 20 * 1024 * 1024 < len(raw) < sqlite_bridge.config.smtp.max_message_size
    with login(sqlite_bridge, ANNA) as c:
        expect(c.mail(ANNA, [f"SIZE={len(raw)}"]), 250, "2.1.0")
        expect(c.rcpt(JOBCENTER), 250, "2.1.5")
        text = expect(data_reply(c, raw), 250, "2.0.0")
    stored = sqlite_bridge.store.message(text.split()[2])
    sent_sha = hashlib.sha256(raw).hexdigest()
    assert stored["sha256"] == sent_sha and stored["size"] == len(raw)
    assert hashlib.sha256(sqlite_bridge.app.blobs.get(sent_sha)).hexdigest() == sent_sha


def test_size_over_limit_refused_at_mail_and_connection_stays_usable(bridge: RunningBridge) -> None:
    limit = bridge.config.smtp.max_message_size
    with login(bridge, ANNA) as c:
        text = expect(c.mail(ANNA, [f"SIZE={limit + 1}"]), 552, "5.3.4")
        assert "size" in text.lower()
        expect(c.rcpt(JOBCENTER), 503, "5.5.1")                # no transaction was opened
        expect(c.mail(ANNA, [f"SIZE={limit}"]), 250, "2.1.0")  # exactly the limit is fine
        c.rset()
        raw = message(ANNA, JOBCENTER)
        expect(c.mail(ANNA, [f"SIZE={len(raw)}"]), 250, "2.1.0")
        expect(c.rcpt(JOBCENTER), 250, "2.1.5")
        expect(data_reply(c, raw), 250, "2.0.0")
    assert len(accepted(bridge)) == 1


def test_data_over_limit_without_size_refused_and_connection_stays_usable(limited: RunningBridge) -> None:
    big = message(ANNA, JOBCENTER, body=("y" * 998 + "\r\n") * 70)
    assert len(big) > MAX_SIZE
    with login(limited, ANNA) as c:
        assert c.esmtp_features["size"] == str(MAX_SIZE)
        text = expect(transaction(c, ANNA, JOBCENTER, big), 552, "5.3.4")
        assert "size" in text.lower()
        expect(transaction(c, ANNA, JOBCENTER, message(ANNA, JOBCENTER)), 250, "2.0.0")
    assert len(accepted(limited)) == 1


def nested(depth: int) -> str:
    """A body of `depth` nested multiparts around one text part (the message itself is depth 1)."""
    if depth == 0:
        return "Content-Type: text/plain\r\n\r\ninnermost\r\n"
    b = f"b{depth}"
    return f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n--{b}\r\n{nested(depth - 1)}--{b}--\r\n'


def shaped(extra_headers: str = "", body: str = "Hej\r\n", content_type: str | None = None) -> bytes:
    raw = message(ANNA, JOBCENTER, body=body, extra=extra_headers)
    if content_type is not None:
        raw = raw.replace(b"Content-Type: text/plain; charset=utf-8\r\n\r\n", content_type.encode())
    return raw


def test_header_mime_and_line_ending_limits_refused_with_plain_words(limited: RunningBridge) -> None:
    folded = "X-Filler: start\r\n" + "".join(f" {'f' * 70}\r\n" for _ in range(MAX_HEADER_BYTES // 70))
    cases = {
        "header section too large": (shaped(folded), "header section is too large"),
        "too many header fields": (shaped("".join(f"X-N{i}: {i}\r\n" for i in range(MAX_HEADER_COUNT))),
                                   "too many header fields"),
        "MIME nested too deep": (shaped(content_type=nested(MAX_MIME_DEPTH)), "nested too deeply"),
        "bare LF": (shaped(body="one line\nand another\r\n"), "bare CR or LF"),
        "bare CR": (shaped(body="one line\rand another\r\n"), "bare CR or LF"),
        "bare LF in the header": (shaped("X-Note: a\nb\r\n"), "bare CR or LF"),
    }
    with login(limited, ANNA) as c:
        for case, (raw, words) in cases.items():
            assert len(raw) < MAX_SIZE, case
            text = expect(transaction(c, ANNA, JOBCENTER, raw), 554, "5.6.0")
            assert words in text, (case, text)
        # Just inside every limit: accepted, on the same connection.
        fine = shaped("".join(f"X-N{i}: {i}\r\n" for i in range(MAX_HEADER_COUNT - 7)),
                      content_type=nested(MAX_MIME_DEPTH - 1))
        expect(transaction(c, ANNA, JOBCENTER, fine), 250, "2.0.0")
    assert len(accepted(limited)) == 1
    rejected = [e for e in limited.store.audit_events("borger") if e["kind"] == "submit.rejected"]
    assert len(rejected) == len(cases)


def test_recipient_past_the_limit_gets_452_and_earlier_ones_are_kept(limited: RunningBridge) -> None:
    Admin(limited.store, SystemClock(), "tests").add_contact_point(BORGERSERVICE, "Borgerservice")
    with login(limited, ANNA) as c:
        expect(c.mail(ANNA), 250, "2.1.0")
        expect(c.rcpt(JOBCENTER), 250, "2.1.5")
        expect(c.rcpt(BORGERSERVICE), 250, "2.1.5")
        text = expect(c.rcpt("ydelse@kommune.dp2.test"), 452, "4.5.3")
        assert "too many recipients" in text
        expect(c.rcpt(JOBCENTER), 452, "4.5.3")                # still full, even for a repeat
        uid = expect(data_reply(c, message(ANNA, JOBCENTER)), 250, "2.0.0").split()[2]
    [event] = accepted(limited)
    assert event["message_uuid"] == uid
    assert event["details"]["recipients"] == [JOBCENTER, BORGERSERVICE]

"""STARTTLS command injection (CVE-2024-34083 class, RFC 3207 section 4.2): a command sent in
the same packet as STARTTLS, still in plaintext, must never run inside the TLS session, and
plaintext where the TLS handshake belongs must not hurt the server.  Acceptance point 6.

Raw sockets, because smtplib never pipelines behind STARTTLS.  Dropping the connection is a
safe answer too; the unsafe outcome (the injected command executed) must never happen.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from base64 import b64encode

import pytest

from tests.conftest import ANNA, JOBCENTER, PASSWORDS, RunningBridge
from tests.helpers.smtp import login, message, tls_context


class Raw:
    """An SMTP connection at the byte level: send exactly these bytes, read whole replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        """The lines of one reply; [] if the server closed the connection instead."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    chunk = self.sock.recv(4096)
                except (ConnectionResetError, ssl.SSLError):
                    chunk = b""
                if not chunk:
                    return lines
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def starttls(self, bridge: RunningBridge) -> "Raw":
        assert not self.buf, "plaintext left over after 220"
        return Raw(tls_context(bridge).wrap_socket(self.sock, server_hostname="localhost"))


def plain_session(bridge: RunningBridge) -> Raw:
    conn = Raw(socket.create_connection(("127.0.0.1", bridge.smtp_port), timeout=10))
    assert conn.reply()[0].startswith(b"220 ")
    conn.send(b"EHLO client.test\r\n")
    assert conn.reply()[-1].startswith(b"250 ")
    return conn


def auth_events(bridge: RunningBridge) -> list[dict]:
    return [e for e in bridge.store.audit_events() if e["kind"] == "login"]


INJECTED = {
    # A login the attacker chose: if it ran inside TLS, the victim's session would be hers.
    "auth": b"AUTH PLAIN " + b64encode(f"\0{ANNA}\0{PASSWORDS[ANNA]}".encode()) + b"\r\n",
    "mail": f"MAIL FROM:<{ANNA}>\r\n".encode(),
    "noop": b"NOOP\r\nNOOP\r\n",
}


def test_command_pipelined_behind_starttls_never_runs(bridge: RunningBridge) -> None:
    for injected in INJECTED.values():
        conn = plain_session(bridge)
        try:
            conn.send(b"STARTTLS\r\n" + injected)              # one packet
            assert conn.reply() == [b"220 2.0.0 Ready to start TLS"]
            conn = conn.starttls(bridge)
            first_reply_is_ours(conn)
        except (ssl.SSLError, ConnectionError):
            pass                                                # dropped: safe as well
        finally:
            conn.sock.close()
    assert auth_events(bridge) == []


def first_reply_is_ours(conn: Raw) -> None:
    """Inside TLS: the first reply answers our EHLO, we are not authenticated, nothing is queued."""
    conn.send(b"EHLO client.test\r\n")
    ehlo = conn.reply()
    if not ehlo:
        return                                                  # dropped: safe
    assert ehlo[0] == b"250-localhost" and ehlo[-1] == b"250 ENHANCEDSTATUSCODES", ehlo
    assert b"250-AUTH LOGIN PLAIN" in ehlo
    conn.send(f"MAIL FROM:<{ANNA}>\r\n".encode())
    mail = conn.reply()
    assert len(mail) == 1 and re.fullmatch(rb"530 5\.7\.0 .* \(ref [0-9a-f]{12}\)", mail[0]), mail
    conn.send(b"NOOP\r\n")
    assert conn.reply() == [b"250 2.0.0 OK"]


def test_plaintext_where_the_handshake_belongs_does_not_hurt_the_server(
        sqlite_bridge: RunningBridge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    for garbage in (b"NOOP\r\n", b"MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\n", b"\x16\x03\x01\x00\x05hello"):
        conn = plain_session(sqlite_bridge)
        try:
            conn.send(b"STARTTLS\r\n")
            assert conn.reply() == [b"220 2.0.0 Ready to start TLS"]
            conn.send(garbage)                  # instead of a TLS ClientHello
            assert_closed_without_words(conn.sock)
        finally:
            conn.sock.close()
    with socket.create_connection(("127.0.0.1", sqlite_bridge.smtps_port), timeout=10) as sock:
        sock.sendall(b"EHLO client.test\r\n")   # plaintext on the implicit-TLS port
        assert_closed_without_words(sock)
    # The server is fine: the next client completes a whole transaction.
    with login(sqlite_bridge, ANNA) as c:
        c.sendmail(ANNA, [JOBCENTER], message(ANNA, JOBCENTER))
    assert not [e for e in sqlite_bridge.store.audit_events() if e["result"] == "fail"]
    # A client's broken handshake is its problem, logged as such, not a server error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert sum("TLS handshake failed" in r.getMessage() for r in caplog.records) == 3


def test_second_starttls_inside_tls_is_refused(sqlite_bridge: RunningBridge,
                                               caplog: pytest.LogCaptureFixture) -> None:
    # RFC 3207 section 4.2: a TLS session is never started twice; the session stays usable.
    conn = plain_session(sqlite_bridge)
    try:
        conn.send(b"STARTTLS\r\n")
        assert conn.reply() == [b"220 2.0.0 Ready to start TLS"]
        conn = conn.starttls(sqlite_bridge)
        conn.send(b"EHLO client.test\r\n")
        assert b"250-STARTTLS" not in conn.reply()
        conn.send(b"STARTTLS\r\n")
        [line] = conn.reply()
        assert re.fullmatch(rb"503 5\.5\.1 TLS is already active on this connection "
                            rb"\(ref [0-9a-f]{12}\)", line)
        conn.send(b"NOOP\r\n")
        assert conn.reply() == [b"250 2.0.0 OK"]
    finally:
        conn.sock.close()
    with socket.create_connection(("127.0.0.1", sqlite_bridge.smtps_port), timeout=10) as sock:
        conn = Raw(tls_context(sqlite_bridge).wrap_socket(sock, server_hostname="localhost"))
        try:
            assert conn.reply()[0].startswith(b"220 ")
            conn.send(b"EHLO client.test\r\nSTARTTLS\r\nNOOP\r\n")
            assert conn.reply()[-1] == b"250 ENHANCEDSTATUSCODES"
            assert conn.reply()[0].startswith(b"503 5.5.1 TLS is already active")
            assert conn.reply() == [b"250 2.0.0 OK"]
        finally:
            conn.sock.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def assert_closed_without_words(sock: socket.socket) -> None:
    """The server closes the connection, sending at most a TLS alert: no SMTP reply, no error text."""
    answer = b""
    while chunk := _recv(sock):
        answer += chunk
    assert b"Error" not in answer and b"Traceback" not in answer and b"451" not in answer, answer


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""

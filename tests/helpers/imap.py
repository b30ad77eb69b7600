"""IMAP test helpers: imaplib clients that trust the test CA, and a raw transcript client."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl

from tests.conftest import PASSWORDS, RunningBridge


def imap_client(bridge: RunningBridge, user: str | None = None, implicit: bool = True) -> imaplib.IMAP4:
    """An imaplib client over implicit TLS (or STARTTLS), logged in as `user` if given."""
    ctx = ssl.create_default_context(cafile=bridge.ca_file)
    if implicit:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL("localhost", bridge.port("imap-implicit-tls"),
                                                   ssl_context=ctx, timeout=30)
    else:
        client = imaplib.IMAP4("localhost", bridge.port("imap-starttls"), timeout=30)
        client.starttls(ssl_context=ctx)
    if user:
        client.login(user, PASSWORDS[user])
    return client


class Transcript:
    """Raw bytes in, raw bytes out, over implicit TLS: `t.transact("OK", "a1 NOOP")` sends the
    line and returns every response line up to the tagged one, asserting its status."""

    def __init__(self, bridge: RunningBridge, user: str | None = None) -> None:
        ctx = ssl.create_default_context(cafile=bridge.ca_file)
        raw = socket.create_connection(("localhost", bridge.port("imap-implicit-tls")), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""
        self.greeting = self.readline()
        self.n = 0
        if user:
            self.transact("OK", f"LOGIN {user} {PASSWORDS[user]}")

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        match = re.search(rb"\{(\d+)\}$", line)
        if match:                                   # a literal: read it and the rest of the line
            size = int(match.group(1))
            while len(self.buf) < size:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:size], self.buf[size:]
            return line + b"\r\n" + data + self.readline()
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def transact(self, status: str, command: str | bytes, tag: str | None = None) -> list[bytes]:
        self.n += 1
        tag = tag or f"t{self.n}"
        cmd = command.encode() if isinstance(command, str) else command
        self.send(tag.encode() + b" " + cmd + b"\r\n")
        lines = []
        while True:
            line = self.readline()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                got = line.split(b" ", 2)[1].decode()
                assert got == status, f"expected {status}, got {line!r}; all: {lines!r}"
                return lines

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

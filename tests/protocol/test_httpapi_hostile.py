"""The HTTPS API against clients that hold connections without finishing a request: a
connection that sends nothing, half a header (slowloris), half a header after a kept-alive
response, and a body that stops arriving each end with 408 in bounded time; an oversized
header is refused.  Real listeners, real TLS (the timeouts shortened for the test)."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Iterator

import pytest

import bridge.httpapi.app as api_app
import bridge.httpapi.tls as api_tls
from tests.conftest import RunningBridge
from tests.protocol.test_httpapi import SYSTEM, add_token, cli

SHORT = 1.0


@pytest.fixture
def api(sqlite_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningBridge]:
    monkeypatch.setattr(api_tls, "HEAD_TIMEOUT", SHORT)
    monkeypatch.setattr(api_app, "BODY_IDLE_SECONDS", SHORT)
    yield sqlite_bridge


def connect(bridge: RunningBridge) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", bridge.app.api.bound[0][1]), timeout=10)
    tls = ssl.create_default_context(cafile=bridge.ca_file).wrap_socket(raw, server_hostname="localhost")
    tls.settimeout(10)
    return tls


def read_until_closed(sock: ssl.SSLSocket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started, out = time.monotonic(), b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        out += chunk
    return out, time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed(api: RunningBridge) -> None:
    with connect(api) as sock:
        reply, waited = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and waited < SHORT + 5


def test_half_a_header_is_not_waited_for_forever(api: RunningBridge) -> None:
    with connect(api) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
        reply, waited = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and waited < SHORT + 5


def test_half_a_header_after_a_kept_alive_response_is_closed_too(api: RunningBridge) -> None:
    with connect(api) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHo")
        reply, waited = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and waited < SHORT + 5


def test_a_body_that_stops_arriving_gets_408(api: RunningBridge) -> None:
    cli(api, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
    token = add_token(api, SYSTEM)
    with connect(api) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 5000\r\n\r\n<memo:Mess")
        reply, waited = read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in head
    assert b"stopped arriving" in body and waited < SHORT + 5


def test_an_oversized_header_is_refused(api: RunningBridge) -> None:
    with connect(api) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        reply, waited = read_until_closed(sock)
    # 400 and closed; when the server closes while the client still sends, the client may see
    # only the TCP reset (no reply bytes).  Either way it was refused at once, not served.
    assert reply.startswith(b"HTTP/1.1 400 ") or reply == b"", reply[:200]
    assert waited < 5

"""Hostile input (issue 3, acceptance 6): the limits of DESIGN.md section 6 hold over real TLS
connections, every refusal is a well-formed BAD / NO / BYE, and memory stays flat."""

from __future__ import annotations

import base64
import gc
import os
import re
import threading
import time
from typing import Iterator

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, PASSWORDS, RunningBridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import login, message, wait_for
from tests.imap.conftest import Opener

REF = re.compile(rb" \(ref [0-9a-f]{12}\)$")
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The largest growth of this process's resident memory (the bridge runs in it) while the
    `with` block runs, sampled every 5 ms."""

    def __enter__(self) -> "PeakRss":
        gc.collect()
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE


def closed(t: Transcript) -> bool:
    try:
        t.readline()
    except (ConnectionError, OSError):
        return True
    return False


@pytest.fixture
def anna(sqlite_bridge: RunningBridge) -> Iterator[Transcript]:
    t = Transcript(sqlite_bridge, ANNA)
    yield t
    t.close()


def test_a_4_gib_append_literal_is_refused_before_the_continuation(anna: Transcript) -> None:
    anna.send(b"a1 APPEND INBOX (\\Seen) {4294967296}\r\n")
    reply = anna.readline()
    assert reply.startswith(b"a1 NO [TOOBIG] ") and REF.search(reply), reply
    assert anna.transact("OK", "NOOP") == [b"t2 OK NOOP completed"]
    anna.send(b"a2 APPEND INBOX {99999999999999999999}\r\n")           # 20 digits
    assert anna.readline().startswith(b"a2 NO [TOOBIG] ")
    anna.send(b"a3 APPEND INBOX {999999999999999999999}\r\n")          # 21 digits: not a literal
    assert anna.readline().startswith(b"a3 BAD ")
    # LITERAL+: the client is already sending the bytes; the server cannot resynchronise.
    anna.send(b"a4 APPEND INBOX {4294967296+}\r\n" + b"x" * 100_000)
    assert anna.readline() == b"* BYE [TOOBIG] literal too large"
    assert closed(anna)


def test_literals_before_login_are_at_most_4_kib(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge)
    t.send(b"a1 LOGIN {4097}\r\n")
    reply = t.readline()
    assert reply.startswith(b"a1 NO [LIMIT] literal too large") and REF.search(reply)
    t.send(b"a2 LOGIN {4096}\r\n")
    assert t.readline() == b"+ Ready for literal data"
    t.send(b"u" * 4096 + b" x\r\n")
    assert t.readline().startswith(b"a2 NO [AUTHENTICATIONFAILED] ")
    t.send(b"a3 LOGIN {4097+}\r\n" + b"u" * 4097 + b" x\r\n")
    assert t.readline() == b"* BYE [LIMIT] literal too large"
    assert closed(t)


@pytest.mark.parametrize("size", [2**20, 16 * 2**20], ids=["1MiB", "16MiB"])
def test_a_huge_command_line_gets_bye_with_flat_memory(anna: Transcript, size: int) -> None:
    payload = b"a1 NOOP " + b"x" * size + b"\r\n"
    with PeakRss() as rss:
        anna.send(payload)
        reply = anna.readline()
    assert reply.startswith(b"* BYE command line too long") and REF.search(reply), reply
    assert closed(anna)
    assert rss.growth_mib < 8, f"memory grew by {rss.growth_mib:.1f} MiB"


def test_ten_thousand_nested_parentheses_are_bad_with_flat_memory(anna: Transcript) -> None:
    with PeakRss() as rss:
        lines = anna.transact("BAD", b"SEARCH " + b"(" * 10_000 + b"ALL" + b")" * 10_000)
    assert lines[-1].startswith(b"t2 BAD parentheses nested too deeply (ref ")
    assert rss.growth_mib < 4
    anna.transact("BAD", b"ID " + b"(" * 40_000)            # unbalanced and deep: still one BAD
    assert anna.transact("OK", "NOOP") == [b"t4 OK NOOP completed"]


def test_two_thousand_pipelined_noops_are_all_answered_in_order(anna: Transcript) -> None:
    anna.send(b"".join(b"n%d NOOP\r\n" % i for i in range(2000)))
    for i in range(2000):
        assert anna.readline() == b"n%d OK NOOP completed" % i
    assert anna.transact("OK", "NOOP") == [b"t2 OK NOOP completed"]


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00", b"a1 \x00NOOP", b"a1 NO\x00OP", b"\xff\xfe\xfd", b"a1 \xc3\xa6\xc3\xb8", b"a1 NOOP \xff",
    b"a1 LOGIN \"\x00\" x", b"a1 SELECT \"unterminated", b")", b"(", b"a1 FETCH 1 (", b"\x1b[2J", b"a1 {",
    b"a1 NOOP {x}", b" ", b"a1", b"a1 UID", b"a1 UID NOOP", b"+ a1 NOOP", b"a1 SELECT INBOX)",
    b"a1 LOGIN \"a\\x\" b", b"\xc3\xa6 NOOP", b"* NOOP",
], ids=lambda g: repr(g)[2:20])
def test_garbage_is_bad_never_an_internal_error(anna: Transcript, garbage: bytes) -> None:
    anna.send(garbage + b"\r\n")
    reply = anna.readline()
    assert re.match(rb"^(a1|\*) BAD [ -~]+ \(ref [0-9a-f]{12}\)$", reply), reply
    assert b"SERVERBUG" not in reply and b"Error" not in reply
    assert anna.transact("OK", "NOOP")[-1].endswith(b"OK NOOP completed")


def test_too_many_bad_commands_close_the_connection(anna: Transcript) -> None:
    for n in range(19):
        anna.transact("BAD", "FROB")
    anna.send(b"last FROB\r\n")
    assert anna.readline().startswith(b"last BAD unknown command")
    bye = anna.readline()
    assert bye.startswith(b"* BYE too many bad commands") and REF.search(bye)
    assert closed(anna)


def test_a_good_command_resets_the_bad_command_counter(anna: Transcript) -> None:
    for _ in range(3):
        for _ in range(15):
            anna.transact("BAD", "FROB")
        anna.transact("OK", "NOOP")
    anna.transact("OK", "NOOP")


def test_a_client_that_never_reads_cannot_grow_server_memory(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    body = base64.encodebytes(os.urandom(2 * 2**20)).decode().replace("\n", "\r\n")
    with login(sqlite_bridge, CASEWORKER) as c:
        for i in range(6):
            c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, f"Stor {i}", body=body))
    wait_for(lambda: len(sqlite_bridge.store.mailbox_entries(ANNA)) == 6, timeout=30)
    t = transcript(sqlite_bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    t.sock.settimeout(0.2)
    with PeakRss() as rss:
        # 20 x FETCH 1:* BODY.PEEK[] is ~330 MB of responses; the client reads none of it.
        sent = 0
        for i in range(20):
            try:
                t.send(b"f%d FETCH 1:* BODY.PEEK[]\r\n" % i)
                sent += 1
            except TimeoutError:
                break
        time.sleep(2)
    print(f"peak growth {rss.growth_mib:.1f} MiB")
    assert rss.growth_mib < 40, f"memory grew by {rss.growth_mib:.1f} MiB"
    # Then the client reads: the responses arrive, complete and in order.
    t.sock.settimeout(30)
    for i in range(min(sent, 2)):
        for _ in range(6):
            assert t.readline().startswith(b"* ")
        assert t.readline() == b"f%d OK FETCH completed" % i


def test_password_literal_and_the_session_id_never_leak(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(sqlite_bridge)
    t.send(b"a1 LOGIN {%d+}\r\n%s {%d}\r\n" % (len(ANNA), ANNA.encode(), len(PASSWORDS[ANNA])))
    assert t.readline() == b"+ Ready for literal data"
    t.send(PASSWORDS[ANNA].encode() + b"\r\n")
    assert t.readline().startswith(b"a1 OK ")


@pytest.mark.parametrize("where", ["before login", "after login", "in IDLE", "inside a literal"])
def test_a_silent_client_is_logged_out(sqlite_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch,
                                       where: str) -> None:
    """RFC 9051 5.4 autologout: a connection that sends nothing gets BYE and is closed (the
    limits are 60 s before login and 31 min after it; shortened here), so silent sockets
    cannot pile up."""
    import bridge.imapserver.server as imap_server
    monkeypatch.setattr(imap_server, "UNAUTH_IDLE_SECONDS", 0.5)
    monkeypatch.setattr(imap_server, "AUTH_IDLE_SECONDS", 1.0)
    t = Transcript(sqlite_bridge, None if where in ("before login", "inside a literal") else ANNA)
    try:
        if where == "in IDLE":
            t.transact("OK", "SELECT INBOX")
            t.send(b"i1 IDLE\r\n")
            assert t.readline().startswith(b"+ ")
        elif where == "inside a literal":
            t.send(b"a1 LOGIN {5}\r\n")
            assert t.readline().startswith(b"+ ")
            t.send(b"an")                          # two of five bytes, then silence
        started = time.monotonic()
        lines = []
        while True:
            try:
                lines.append(t.readline())
            except (ConnectionError, OSError):
                break
        assert any(line.startswith(b"* BYE Autologout") for line in lines), lines
        assert time.monotonic() - started < 6
    finally:
        t.close()


def test_a_client_that_keeps_talking_is_not_logged_out(anna: Transcript, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.imapserver.server as imap_server
    monkeypatch.setattr(imap_server, "AUTH_IDLE_SECONDS", 1.0)
    for _ in range(6):                               # 3 s in all, never 1 s silent
        time.sleep(0.5)
        anna.transact("OK", "NOOP")

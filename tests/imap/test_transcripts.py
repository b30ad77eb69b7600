"""Raw transcripts of the general grammar and the commands of any state (issue 3, acceptance 1):
literals, LITERAL+, quoted strings, sequence sets, tags, CAPABILITY, ID, ENABLE, NAMESPACE,
LOGOUT, AUTHENTICATE PLAIN, STARTTLS.  Raw bytes in, exact bytes out."""

from __future__ import annotations

import base64
import re
import socket
import ssl
from typing import Iterator

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, PASSWORDS, RunningBridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import login, message, wait_for

PW = PASSWORDS[ANNA]


def ok_login(line: bytes, tag: bytes) -> bool:
    return bool(re.fullmatch(tag + rb" OK \[CAPABILITY [^\]]+\] logged in", line))


def caps(line: bytes) -> set[str]:
    return set(re.search(rb"CAPABILITY ([^\]]+)", line).group(1).decode().split())  # type: ignore[union-attr]


class Plain:
    """A raw client on the STARTTLS port."""

    def __init__(self, bridge: RunningBridge) -> None:
        self.bridge = bridge
        self.sock: socket.socket = socket.create_connection(("localhost", bridge.port("imap-starttls")), timeout=10)
        self.buf = b""

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def starttls(self) -> None:
        assert self.buf == b""
        ctx = ssl.create_default_context(cafile=self.bridge.ca_file)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def t(sqlite_bridge: RunningBridge) -> Iterator[Transcript]:
    client = Transcript(sqlite_bridge)
    yield client
    client.close()


@pytest.fixture
def anna(sqlite_bridge: RunningBridge) -> Iterator[Transcript]:
    client = Transcript(sqlite_bridge, ANNA)
    yield client
    client.close()


# --- literals, quoted strings, tags -----------------------------------------------------

def test_login_with_synchronizing_literals(t: Transcript) -> None:
    t.send(b"a1 LOGIN {%d}\r\n" % len(ANNA))
    assert t.readline() == b"+ Ready for literal data"
    t.send(ANNA.encode() + b" {%d}\r\n" % len(PW))
    assert t.readline() == b"+ Ready for literal data"
    t.send(PW.encode() + b"\r\n")
    assert ok_login(t.readline(), b"a1")


def test_login_with_non_synchronizing_literals_in_one_send(t: Transcript) -> None:
    t.send(b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\na2 NOOP\r\n" % (len(ANNA), ANNA.encode(), len(PW), PW.encode()))
    assert ok_login(t.readline(), b"a1")                       # no "+" continuation at all
    assert t.readline() == b"a2 OK NOOP completed"


def test_literal_with_crlf_and_8bit_inside(t: Transcript) -> None:
    odd = b'p"w\\\r\n\xc3\xa6 {3}\r\n'
    t.send(b"a1 LOGIN %s {%d+}\r\n%s\r\n" % (ANNA.encode(), len(odd), odd))
    assert t.readline().startswith(b"a1 NO [AUTHENTICATIONFAILED] authentication failed (ref ")


def test_quoted_strings_and_escapes(t: Transcript) -> None:
    assert ok_login(t.transact("OK", f'LOGIN "{ANNA}" "{PW}"')[-1], b"t1")


@pytest.mark.parametrize("line", [b'LOGIN "a\\"b\\\\c" "x"', b'LOGIN "" ""', b"LOGIN a]b x"])
def test_quoted_escapes_parse_and_fail_as_logins(t: Transcript, line: bytes) -> None:
    assert t.transact("NO", line)[-1].startswith(b"t1 NO [AUTHENTICATIONFAILED] ")


@pytest.mark.parametrize("line", [b'LOGIN "a\\b" x', b'LOGIN "a', b'LOGIN "a" "b" c', b"LOGIN a", b"LOGIN (a) b",
                                  b"LOGIN a\\b x", b"LOGIN"])
def test_malformed_arguments_are_bad(t: Transcript, line: bytes) -> None:
    assert re.fullmatch(rb"t1 BAD [ -~]+ \(ref [0-9a-f]{12}\)", t.transact("BAD", line)[-1])


@pytest.mark.parametrize("tag", [b"a.b-c_d~!#$&'=?^|:;,<>@", b"A1]", b"0", b"x" * 64, b"`'"])
def test_odd_tags_are_echoed(t: Transcript, tag: bytes) -> None:
    t.send(tag + b" NOOP\r\n")
    assert t.readline() == tag + b" OK NOOP completed"


@pytest.mark.parametrize("tag", [b"+a", b"a+", b"a*", b"a%", b"a{1}", b'a"', b"a\\"])
def test_invalid_tags_get_an_untagged_bad(t: Transcript, tag: bytes) -> None:
    t.send(tag + b" NOOP\r\n")
    assert re.fullmatch(rb"\* BAD [ -~]+ \(ref [0-9a-f]{12}\)", t.readline())
    assert t.transact("OK", "NOOP") == [b"t1 OK NOOP completed"]


def test_parenthesis_nesting_up_to_32_is_fine(anna: Transcript) -> None:
    assert anna.transact("OK", b"ID (" + b"(" * 31 + b'"name" "x"' + b")" * 32)[0].startswith(b"* ID (")
    assert anna.transact("BAD", b"ID (" + b"(" * 32 + b'"name" "x"' + b")" * 33)[-1].startswith(
        b"t3 BAD parentheses nested too deeply (ref ")
    assert anna.transact("BAD", b"ID ((\"a\")")[-1].startswith(b"t4 BAD unbalanced parentheses (ref ")
    assert anna.transact("BAD", b"ID (\"a\"))")[-1].startswith(b"t5 BAD unbalanced parentheses (ref ")


# --- sequence sets -------------------------------------------------------------------------

@pytest.fixture
def three(sqlite_bridge: RunningBridge) -> Iterator[Transcript]:
    with login(sqlite_bridge, CASEWORKER) as c:
        for n in range(3):
            c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, f"Brev {n}"))
    wait_for(lambda: len(sqlite_bridge.store.mailbox_entries(ANNA)) == 3, timeout=10)
    client = Transcript(sqlite_bridge, ANNA)
    assert b"* 3 EXISTS" in client.transact("OK", "EXAMINE INBOX")
    yield client
    client.close()


@pytest.mark.parametrize("seqset, numbers", [
    ("1:*", [1, 2, 3]), ("3:1", [1, 2, 3]), ("*", [3]), ("*:2", [2, 3]), ("2,1", [1, 2]), ("3,1:2,2", [1, 2, 3]),
    ("1", [1]), ("3:3", [3]),
])
def test_sequence_sets(three: Transcript, seqset: str, numbers: list[int]) -> None:
    lines = three.transact("OK", f"FETCH {seqset} UID")
    assert lines == [b"* %d FETCH (UID %d)" % (n, n) for n in numbers] + [b"t3 OK FETCH completed"]


@pytest.mark.parametrize("seqset, uids", [
    ("1:*", [1, 2, 3]), ("99:*", [3]), ("2:99", [2, 3]), ("99", []), ("4:5", []), ("3:1", [1, 2, 3]), ("*", [3]),
])
def test_uid_sets_beyond_uidnext(three: Transcript, seqset: str, uids: list[int]) -> None:
    lines = three.transact("OK", f"UID FETCH {seqset} FLAGS")
    assert lines == [b"* %d FETCH (UID %d FLAGS ())" % (u, u) for u in uids] + [b"t3 OK FETCH completed"]


@pytest.mark.parametrize("seqset", ["4", "1:4", "0", "0:1", "1,4", "a", "1:", ":1", "1::2", "1,,2", "-1", "1.5",
                                    "99999999999999999999999"])
def test_bad_sequence_sets(three: Transcript, seqset: str) -> None:
    reply = three.transact("BAD", f"FETCH {seqset} UID")
    assert len(reply) == 1 and re.fullmatch(rb"t3 BAD [ -~]+ \(ref [0-9a-f]{12}\)", reply[0])


def test_empty_mailbox(anna: Transcript) -> None:
    assert b"* 0 EXISTS" in anna.transact("OK", "SELECT Drafts")
    assert anna.transact("OK", "FETCH 1:* FLAGS") == [b"t3 OK FETCH completed"]
    assert anna.transact("OK", "UID FETCH 1:* FLAGS") == [b"t4 OK FETCH completed"]
    assert anna.transact("BAD", "FETCH 1 FLAGS")[0].startswith(b"t5 BAD message number out of range (ref ")


# --- CAPABILITY, ID, ENABLE, NAMESPACE, LOGOUT ------------------------------------------

MUST = {"IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "ID", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE",
        "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC", "SASL-IR"}


def test_capability_before_and_after_tls_and_login(sqlite_bridge: RunningBridge) -> None:
    plain = Plain(sqlite_bridge)
    try:
        greeting = plain.readline()
        assert greeting.startswith(b"* OK [CAPABILITY ") and greeting.endswith(b"] dp2bridge ready")
        before = caps(greeting)
        assert MUST <= before and {"STARTTLS", "LOGINDISABLED"} <= before
        assert not any(c.startswith("AUTH=") for c in before)
        plain.sock.sendall(b"c1 CAPABILITY\r\n")
        assert caps(plain.readline()) == before and plain.readline() == b"c1 OK CAPABILITY completed"
        plain.sock.sendall(b"c2 STARTTLS\r\n")
        assert plain.readline() == b"c2 OK Begin TLS negotiation now"
        plain.starttls()
        plain.sock.sendall(b"c3 CAPABILITY\r\n")
        after_tls = caps(plain.readline())
        assert after_tls == before - {"STARTTLS", "LOGINDISABLED"} | {"AUTH=PLAIN"}
        assert plain.readline() == b"c3 OK CAPABILITY completed"
        plain.sock.sendall(b"c4 STARTTLS\r\n")
        assert plain.readline().startswith(b"c4 BAD TLS is already active (ref ")
        plain.sock.sendall(f"c5 LOGIN {ANNA} {PW}\r\n".encode())
        logged_in = plain.readline()
        assert ok_login(logged_in, b"c5") and caps(logged_in) == after_tls - {"AUTH=PLAIN"}
        plain.sock.sendall(b"c6 CAPABILITY\r\n")
        assert caps(plain.readline()) == after_tls - {"AUTH=PLAIN"}
        plain.sock.sendall(b"c7 STARTTLS\r\n")
        plain.readline()
        assert plain.readline().startswith(b"c7 BAD ")
    finally:
        plain.close()


def test_starttls_discards_a_command_pipelined_behind_it(sqlite_bridge: RunningBridge) -> None:
    plain = Plain(sqlite_bridge)
    try:
        plain.readline()
        # One packet: STARTTLS and an injected command that must never run (CVE-2011-0411 class).
        plain.sock.sendall(b"s1 STARTTLS\r\ns2 CAPABILITY\r\ns3 LOGOUT\r\n")
        assert plain.readline() == b"s1 OK Begin TLS negotiation now"
        plain.starttls()
        plain.sock.sendall(b"s4 NOOP\r\n")
        assert plain.readline() == b"s4 OK NOOP completed"              # nothing from s2 or s3
        plain.sock.sendall(b"s5 NOOP\r\n")
        assert plain.readline() == b"s5 OK NOOP completed"
    finally:
        plain.close()


def test_capability_takes_no_arguments(t: Transcript) -> None:
    assert t.transact("BAD", "CAPABILITY x")[0].startswith(b"t1 BAD unexpected extra arguments (ref ")


def test_id(t: Transcript) -> None:
    reply = b'* ID ("name" "dp2bridge" "vendor" "dp2bridge")'
    assert t.transact("OK", "ID NIL") == [reply, b"t1 OK ID completed"]
    assert t.transact("OK", 'ID ("name" "mutt" "version" {3+}\r\n2.2)') == [reply, b"t2 OK ID completed"]
    assert t.transact("BAD", "ID")[0].startswith(b"t3 BAD ")


def test_enable(anna: Transcript, t: Transcript) -> None:
    assert t.transact("BAD", "ENABLE CONDSTORE")[0].startswith(b"t1 BAD log in first (ref ")
    assert anna.transact("OK", "ENABLE CONDSTORE X-UNKNOWN") == [b"* ENABLED CONDSTORE", b"t2 OK ENABLE completed"]
    assert anna.transact("OK", "ENABLE CONDSTORE") == [b"* ENABLED", b"t3 OK ENABLE completed"]
    assert anna.transact("OK", "ENABLE qresync IMAP4rev2") == [b"* ENABLED QRESYNC IMAP4REV2",
                                                               b"t4 OK ENABLE completed"]


def test_namespace(anna: Transcript, t: Transcript) -> None:
    assert t.transact("BAD", "NAMESPACE")[0].startswith(b"t1 BAD log in first (ref ")
    assert anna.transact("OK", "NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL (("Shared/" "/"))',
                                                b"t2 OK NAMESPACE completed"]


def test_logout_says_bye_then_ok_then_closes(anna: Transcript) -> None:
    assert anna.transact("OK", "LOGOUT") == [b"* BYE dp2bridge logging out", b"t2 OK LOGOUT completed"]
    with pytest.raises(ConnectionError):
        anna.readline()


def test_noop_and_logout_before_login(t: Transcript) -> None:
    assert t.transact("OK", "NOOP") == [b"t1 OK NOOP completed"]
    assert t.transact("BAD", "SELECT INBOX")[0].startswith(b"t2 BAD log in first (ref ")
    assert t.transact("OK", "LOGOUT") == [b"* BYE dp2bridge logging out", b"t3 OK LOGOUT completed"]


# --- AUTHENTICATE PLAIN ---------------------------------------------------------------------

def plain_b64(user: str, password: str, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


def test_authenticate_plain_with_sasl_ir(t: Transcript) -> None:
    assert ok_login(t.transact("OK", b"AUTHENTICATE PLAIN " + plain_b64(ANNA, PW))[-1], b"t1")
    assert t.transact("OK", "SELECT INBOX")[-1].startswith(b"t2 OK [READ-WRITE]")


def test_authenticate_plain_with_a_continuation(t: Transcript) -> None:
    t.send(b"a1 authenticate plain\r\n")
    assert t.readline() == b"+ "
    t.send(plain_b64(ANNA, PW) + b"\r\n")
    assert ok_login(t.readline(), b"a1")


def test_authenticate_failures(t: Transcript) -> None:
    assert t.transact("NO", b"AUTHENTICATE PLAIN " + plain_b64(ANNA, "wrong"))[0].startswith(
        b"t1 NO [AUTHENTICATIONFAILED] authentication failed (ref ")
    t.send(b"a2 AUTHENTICATE PLAIN\r\n")
    assert t.readline() == b"+ "
    t.send(b"*\r\n")
    assert t.readline().startswith(b"a2 BAD authentication cancelled (ref ")
    assert t.transact("BAD", "AUTHENTICATE PLAIN !!!")[0].startswith(
        b"t2 BAD cannot decode the authentication data (ref ")
    assert t.transact("BAD", b"AUTHENTICATE PLAIN " + base64.b64encode(b"no-nuls"))[0].startswith(b"t3 BAD ")
    assert t.transact("NO", "AUTHENTICATE CRAM-MD5")[0].startswith(b"t4 NO [CANNOT] ")
    assert t.transact("BAD", "AUTHENTICATE")[0].startswith(b"t5 BAD ")
    assert ok_login(t.transact("OK", b"AUTHENTICATE PLAIN " + plain_b64(ANNA, PW))[-1], b"t6")
    assert t.transact("BAD", b"AUTHENTICATE PLAIN " + plain_b64(ANNA, PW))[0].startswith(b"t7 BAD ")

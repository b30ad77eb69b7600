"""SEARCH and UID SEARCH: every key, ESEARCH RETURN options, CONDSTORE MODSEQ, and strings
with LIKE metacharacters, quotes, backslashes and 8-bit UTF-8 that match literally."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from bridge.store import models as m
from bridge.store.mailboxes import MailboxRepository
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import login, wait_for
from tests.imap.conftest import Opener

INTERNALS = re.compile(rb"(?i)sqlite|psycopg|sqlalchemy|syntax error|traceback|Error\b|\.py\b")


def raw_message(subject: str, body: str = "Hej\r\n", date: str = "Fri, 27 Nov 2026 10:00:00 +0000",
                extra: str = "", content: str = "text/plain; charset=utf-8") -> bytes:
    return (f"From: Jobcenter <{JOBCENTER}>\r\nTo: Anna <{ANNA_CPR_ADDR}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((subject, body)))}@kommune.dp2.test>\r\nDate: {date}\r\n{extra}"
            f"MIME-Version: 1.0\r\nContent-Type: {content}\r\n\r\n{body}").encode()


def deliver(bridge: RunningBridge, messages: list[bytes]) -> list[dict]:
    """Deliver one by one so UIDs follow the list's order."""
    before = len(bridge.store.mailbox_entries(ANNA))
    with login(bridge, CASEWORKER) as c:
        for n, raw in enumerate(messages, before + 1):
            c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], raw)
            wait_for(lambda: len(bridge.store.mailbox_entries(ANNA)) >= n, timeout=10)
    return bridge.store.mailbox_entries(ANNA)


def add_flags(bridge: RunningBridge, uids: list[int], flags: list[str]) -> None:
    repo = MailboxRepository(bridge.store)
    with bridge.store.ro() as s:
        account = s.scalar(select(m.Account.id).where(m.Account.login == ANNA))
    inbox = repo.find(account, "INBOX")
    assert inbox is not None
    repo.store_flags(inbox.id, uids, "+", flags)


def literal_command(command: str, text: str) -> bytes:
    data = text.encode()
    return command.encode() + b" {%d+}\r\n" % len(data) + data


def result(lines: list[bytes]) -> bytes:
    """The one untagged SEARCH or ESEARCH line of a reply."""
    found = [line for line in lines if line.startswith((b"* SEARCH", b"* ESEARCH"))]
    assert len(found) == 1, lines
    assert not any(INTERNALS.search(line) for line in lines), lines
    return found[0]


SUBJECTS = ["100% sikker", "100 procent", "under_score", "underXscore", "Anna's sag", "Annas sag",
            "back\\slash", "=?utf-8?q?=C3=86BLE_og_p=C3=A6re?=", "æblegrød", "Æbler", "ble"]


def test_subject_strings_match_literally(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, [raw_message(s) for s in SUBJECTS])
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    assert result(t.transact("OK", 'SEARCH SUBJECT "%"')) == b"* SEARCH 1"
    assert result(t.transact("OK", 'SEARCH SUBJECT "0%"')) == b"* SEARCH 1"
    assert result(t.transact("OK", 'SEARCH SUBJECT "_"')) == b"* SEARCH 3"
    assert result(t.transact("OK", 'SEARCH SUBJECT "r_s"')) == b"* SEARCH 3"
    assert result(t.transact("OK", "SEARCH SUBJECT \"'\"")) == b"* SEARCH 5"
    assert result(t.transact("OK", "SEARCH SUBJECT \"a's' OR 1=1 --\"")) == b"* SEARCH"
    assert result(t.transact("OK", 'SEARCH SUBJECT "\\\\"')) == b"* SEARCH 7"
    assert result(t.transact("OK", 'SEARCH SUBJECT "k\\\\s"')) == b"* SEARCH 7"
    assert result(t.transact("OK", 'SEARCH SUBJECT "\\\\%"')) == b"* SEARCH"
    assert result(t.transact("OK", "UID SEARCH SUBJECT ANNA")) == b"* SEARCH 5 6"
    # A synchronizing literal with 8-bit UTF-8: case-insensitive, encoded words decoded.
    t.send(b"u1 SEARCH CHARSET UTF-8 SUBJECT {5}\r\n")
    assert t.readline().startswith(b"+")
    t.send("æble".encode() + b"\r\n")
    lines = [t.readline(), t.readline()]
    assert lines[1].startswith(b"u1 OK")
    assert result(lines) == b"* SEARCH 8 9 10"
    lines = t.transact("OK", literal_command("SEARCH SUBJECT", "blegrød"))
    assert result(lines) == b"* SEARCH 9"
    assert result(t.transact("OK", b"SEARCH SUBJECT {4+}\r\n%_'\\")) == b"* SEARCH"
    assert result(t.transact("OK", "SEARCH CHARSET US-ASCII SUBJECT ble")) == b"* SEARCH 8 9 10 11"
    assert result(t.transact("OK", "SEARCH NOT SUBJECT ble")) == b"* SEARCH 1 2 3 4 5 6 7"
    assert result(t.transact("OK", 'SEARCH OR SUBJECT "%" SUBJECT "_"')) == b"* SEARCH 1 3"


def test_flag_size_sequence_and_address_keys(bridge: RunningBridge, transcript: Opener) -> None:
    entries = deliver(bridge, [
        raw_message("Første", body="kort\r\n"),
        raw_message("Anden", body=("x" * 70 + "\r\n") * 30, extra="Cc: Lawyer <advokat@firma.dp2.test>\r\n"),
        raw_message("Tredje", body="mellem " * 50 + "\r\n"),
    ])
    sizes = [len(bridge.app.blobs.get(e["sha256"])) for e in entries]
    add_flags(bridge, [1], ["\\Seen", "\\Flagged"])
    add_flags(bridge, [2], ["\\Answered", "\\Deleted", "$Work"])
    add_flags(bridge, [3], ["\\Draft", "work_later"])
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    cases = {
        "ALL": "1 2 3", "SEEN": "1", "UNSEEN": "2 3", "FLAGGED": "1", "UNFLAGGED": "2 3",
        "ANSWERED": "2", "UNANSWERED": "1 3", "DELETED": "2", "UNDELETED": "1 3", "DRAFT": "3",
        "UNDRAFT": "1 2", "KEYWORD $Work": "2", "KEYWORD $work": "2", "UNKEYWORD $Work": "1 3",
        "KEYWORD work_later": "3", "KEYWORD work%later": "", "KEYWORD workXlater": "",
        "NEW": "", "RECENT": "", "OLD": "1 2 3", "UNRECENT": "1 2 3",
        "NOT SEEN": "2 3", "OR SEEN DRAFT": "1 3", "(SEEN FLAGGED)": "1", "(SEEN DRAFT)": "",
        "NOT (SEEN OR DRAFT ANSWERED)": "1 2 3", "(SEEN OR DRAFT FLAGGED)": "1",
        "NOT NOT NOT SEEN": "2 3",
        "2:3": "2 3", "2:*": "2 3", "*": "3", "1,3": "1 3", "4:*": "3", "3:9": "3", "UID 2:*": "2 3",
        "UID 9:*": "3", "UID 4:9": "", "1:* UNSEEN": "2 3", "OR 1 3 UNSEEN": "3",
        f"LARGER {sizes[0]}": "2 3", f"SMALLER {sizes[1]}": "1 3", f"LARGER {sizes[1]}": "",
        "LARGER 99999999999999999999": "", "SMALLER 99999999999999999999": "1 2 3",
        "FROM jobcenter@KOMMUNE": "1 2 3", 'FROM "Jobcenter <jobcenter"': "1 2 3",
        "FROM anna": "", "TO anna@borger": "1 2 3", "TO ANNA": "1 2 3", "CC advokat": "2",
        "TO 0101701234": "",                  # the CPR address is masked in Anna's copy
        "CC Lawyer": "2", "BCC anna": "", "OR CC advokat SEEN": "1 2",
        "HEADER Cc firma.dp2": "2", 'HEADER CC ""': "2", 'HEADER X-Nothing ""': "",
        "HEADER subject tredje": "3", "BODY MELLEM": "3", "BODY kort": "1", "BODY Tredje": "",
        "TEXT tredje": "3", "TEXT kort": "1", "TEXT Message-ID": "1 2 3",
        "OR BODY kort FLAGGED": "1", "NOT BODY kort": "2 3",
    }
    for key, want in cases.items():
        got = result(t.transact("OK", f"SEARCH {key}"))
        assert got == (b"* SEARCH " + want.encode()).rstrip(), key
    assert result(t.transact("OK", "UID SEARCH UNSEEN")) == b"* SEARCH 2 3"


def test_dates_internal_and_sent(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, [
        raw_message("a", date="Mon, 02 Mar 2026 23:30:00 -0500"),     # 3 March in UTC
        raw_message("b", date="Tue, 3 Mar 2026 00:10:00 +0100"),      # 2 March in UTC
        raw_message("c", date="not a date at all"),                   # falls back to internal date
    ])
    today = dt.datetime.now(dt.timezone.utc).date()
    fmt = lambda d: f"{d.day}-{d.strftime('%b')}-{d.year}"   # noqa: E731
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    cases = {
        f"ON {fmt(today)}": "1 2 3", f'SINCE "{fmt(today)}"': "1 2 3",
        f"BEFORE {fmt(today)}": "", f"BEFORE {fmt(today + dt.timedelta(days=1))}": "1 2 3",
        f"SINCE {fmt(today + dt.timedelta(days=1))}": "", "ON 2-Mar-2026": "",
        "SENTON 2-Mar-2026": "1", "SENTON 3-MAR-2026": "2", "SENTBEFORE 3-Mar-2026": "1",
        "SENTSINCE 3-Mar-2026": "2 3", f"SENTON {fmt(today)}": "3",
        "SENTSINCE 1-Jan-2026 SENTBEFORE 1-Apr-2026": "1 2",
    }
    for key, want in cases.items():
        assert result(t.transact("OK", f"SEARCH {key}")) == (b"* SEARCH " + want.encode()).rstrip(), key
    for bad in ("SINCE 32-Mar-2026", "SINCE 1-Foo-2026", "SENTON 2026-03-02", "ON"):
        t.transact("BAD", f"SEARCH {bad}")


def test_esearch_return_options_and_save(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, [raw_message(f"brev {n}") for n in range(1, 6)])
    add_flags(bridge, [2, 4, 5], ["\\Flagged"])
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    lines = t.transact("OK", "SEARCH RETURN (MIN MAX ALL COUNT) FLAGGED", tag="e1")
    assert result(lines) == b'* ESEARCH (TAG "e1") MIN 2 MAX 5 ALL 2,4:5 COUNT 3'
    lines = t.transact("OK", "UID SEARCH RETURN (COUNT) CHARSET UTF-8 FLAGGED", tag="e2")
    assert result(lines) == b'* ESEARCH (TAG "e2") UID COUNT 3'
    lines = t.transact("OK", "UID SEARCH RETURN () UNFLAGGED", tag="e3")
    assert result(lines) == b'* ESEARCH (TAG "e3") UID ALL 1,3'
    lines = t.transact("OK", "SEARCH RETURN (MIN MAX ALL COUNT) SUBJECT nowhere", tag="e4")
    assert result(lines) == b'* ESEARCH (TAG "e4") COUNT 0'
    # SAVE alone answers nothing; $ then names the saved messages.
    lines = t.transact("OK", "SEARCH RETURN (SAVE) FLAGGED")
    assert not [line for line in lines if b"SEARCH" in line.split(b" OK")[0]]
    assert result(t.transact("OK", "SEARCH $")) == b"* SEARCH 2 4 5"
    assert result(t.transact("OK", "UID SEARCH NOT $")) == b"* SEARCH 1 3"
    lines = t.transact("OK", "SEARCH RETURN (SAVE MIN) FLAGGED", tag="e5")
    assert result(lines) == b'* ESEARCH (TAG "e5") MIN 2'
    assert result(t.transact("OK", "SEARCH $")) == b"* SEARCH 2"
    t.transact("BAD", "SEARCH RETURN (SAVE) FOO")           # a failed SAVE empties $
    assert result(t.transact("OK", "SEARCH $")) == b"* SEARCH"
    t.transact("BAD", "SEARCH RETURN (PARTIAL 1:5) ALL")
    # Once IMAP4rev2 is enabled every SEARCH answers ESEARCH.
    t.transact("OK", "ENABLE IMAP4rev2")
    assert result(t.transact("OK", "SEARCH 3:4", tag="e6")) == b'* ESEARCH (TAG "e6") ALL 3:4'


def test_modseq_search(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, [raw_message(f"brev {n}") for n in range(1, 4)])
    add_flags(bridge, [2], ["\\Seen"])
    entries = bridge.store.mailbox_entries(ANNA)
    modseqs = {e["uid"]: e["modseq"] for e in entries}
    assert modseqs[2] > max(modseqs[1], modseqs[3])
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    lines = t.transact("OK", f"SEARCH MODSEQ {modseqs[2]}")
    assert result(lines) == b"* SEARCH 2 (MODSEQ %d)" % modseqs[2]
    lines = t.transact("OK", f'UID SEARCH MODSEQ "/flags/\\\\seen" all {modseqs[1]}')
    assert result(lines) == b"* SEARCH 1 2 3 (MODSEQ %d)" % modseqs[2]
    lines = t.transact("OK", f"SEARCH RETURN (MIN) MODSEQ {modseqs[1]}", tag="m1")
    assert result(lines) == b'* ESEARCH (TAG "m1") MIN 1 MODSEQ %d' % modseqs[1]
    assert result(t.transact("OK", f"SEARCH MODSEQ {modseqs[2] + 1}")) == b"* SEARCH"
    t.transact("BAD", 'SEARCH MODSEQ "/flags/\\\\seen" everything 1')


def test_charsets_syntax_and_limits(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, [raw_message("brev")])
    t = transcript(bridge, ANNA)
    t.transact("BAD", "SEARCH ALL")                       # nothing selected yet
    t.transact("OK", "SELECT INBOX")
    reply = t.transact("NO", "SEARCH CHARSET ISO-8859-1 SUBJECT brev", tag="c1")[-1]
    assert reply.startswith(b"c1 NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset (ref ")
    assert result(t.transact("OK", 'SEARCH CHARSET "utf-8" SUBJECT BREV')) == b"* SEARCH 1"
    for bad in ("SEARCH", "SEARCH CHARSET UTF-8", "SEARCH FOO", "SEARCH ()", "SEARCH (SEEN",
                "SEARCH LARGER x", "SEARCH UID", "SEARCH OR SEEN", "SEARCH 0:1", "SEARCH SUBJECT",
                "SEARCH RETURN (FOO) ALL", "SEARCH HEADER \"A:B\" x",
                "SEARCH NOT " + "NOT " * 200 + "ALL"):
        lines = t.transact("BAD", bad)
        assert not any(INTERNALS.search(line) for line in lines), lines
    lines = t.transact("NO", "SEARCH " + "SEEN " * 1500)
    assert lines[-1].split(b" ", 3)[2] == b"[LIMIT]"
    assert result(t.transact("OK", "SEARCH " + "UNSEEN " * 900)) == b"* SEARCH 1"
    big = ",".join(str(n) for n in range(1, 3000, 2))             # many ranges: matched in Python
    assert result(t.transact("OK", f"UID SEARCH UID {big}")) == b"* SEARCH 1"
    assert result(t.transact("OK", "SEARCH UID 18446744073709551615")) == b"* SEARCH"


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_body_search_undoes_transfer_encoding(sqlite_bridge: RunningBridge, encoding: str, transcript: Opener) -> None:
    import base64
    import quopri
    text = "Mødet er flyttet til tirsdag".encode()
    body = (base64.b64encode(text) if encoding == "base64" else quopri.encodestring(text)).decode()
    extra = f"Content-Transfer-Encoding: {encoding}\r\n"
    deliver(sqlite_bridge, [raw_message("brev", body=body + "\r\n", extra=extra)])
    t = transcript(sqlite_bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    assert result(t.transact("OK", literal_command("SEARCH BODY", "MØDET ER"))) == b"* SEARCH 1"
    assert result(t.transact("OK", "SEARCH TEXT tirsdag")) == b"* SEARCH 1"
    assert result(t.transact("OK", "SEARCH BODY onsdag")) == b"* SEARCH"


def test_results_follow_the_sessions_view_of_the_mailbox(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, [raw_message("en"), raw_message("to")])
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    deliver(bridge, [raw_message("tre")])
    # The third letter is not yet announced: no result names it; EXISTS follows the result.
    lines = t.transact("OK", "SEARCH ALL")
    assert lines[:2] == [b"* SEARCH 1 2", b"* 3 EXISTS"]
    assert result(t.transact("OK", "SEARCH ALL")) == b"* SEARCH 1 2 3"
    assert result(t.transact("OK", "UID SEARCH SUBJECT tre")) == b"* SEARCH 3"


def test_sequence_numbers_stay_the_clients_while_another_session_expunges(bridge: RunningBridge) -> None:
    deliver(bridge, [raw_message("en"), raw_message("to"), raw_message("tre")])
    t, other = Transcript(bridge, ANNA), Transcript(bridge, ANNA)
    try:
        t.transact("OK", "SELECT INBOX")
        other.transact("OK", "SELECT INBOX")
        other.transact("OK", "UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        other.transact("OK", "UID EXPUNGE 2")
        # By number: the client's numbering holds and no EXPUNGE is sent (RFC 9051 section 7.5.1).
        assert t.transact("OK", "SEARCH 2:3", tag="s1") == [b"* SEARCH 3", b"s1 OK SEARCH completed"]
        assert t.transact("OK", "UID SEARCH ALL", tag="s2") == [
            b"* SEARCH 1 3", b"* 2 EXPUNGE", b"s2 OK SEARCH completed"]
        assert result(t.transact("OK", "SEARCH 2:3")) == b"* SEARCH 2"
    finally:
        t.close()
        other.close()


def test_saved_result_is_usable_by_fetch_store_and_copy(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    """RFC 5182 SEARCHRES: `$` after SEARCH RETURN (SAVE) names the same messages in FETCH,
    STORE and COPY."""
    deliver(sqlite_bridge, [raw_message(subject) for subject in ("alpha", "beta", "alpha two")])
    t = transcript(sqlite_bridge, ANNA)
    assert b"SEARCHRES" in t.transact("OK", "CAPABILITY")[0]
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "UID SEARCH RETURN (SAVE) SUBJECT alpha")
    fetched = [line for line in t.transact("OK", "FETCH $ (UID)") if line.startswith(b"* ")]
    assert [line.split(b"UID ")[1].rstrip(b")") for line in fetched] == [b"1", b"3"]
    t.transact("OK", "STORE $ +FLAGS.SILENT (\\Flagged)")
    flagged = t.transact("OK", "SEARCH FLAGGED")[0]
    assert flagged == b"* SEARCH 1 3"
    copied = t.transact("OK", "COPY $ Archive")[-1]
    assert re.search(rb"\[COPYUID \d+ 1,3 1:2\]", copied), copied

"""`dp2bridge trace`: a message's story from the audit trail, on SQLite and PostgreSQL.

Messages go through the running bridge over SMTP; the trace is read with the
admin command in-process, as a table and as --json.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.imap import imap_client
from tests.helpers.smtp import login, message, send, settled

if TYPE_CHECKING:
    from tests.admin.conftest import Cli

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$")


def letter(bridge: RunningBridge, message_id: str = "<trace-1@kommune.test>") -> str:
    with login(bridge, CASEWORKER) as c:
        uuid = send(c, JOBCENTER, ANNA_CPR_ADDR, message(JOBCENTER, ANNA_CPR_ADDR, "Indkaldelse",
                                                          message_id=message_id))
    settled(bridge)
    return uuid


def table_rows(out: str) -> list[dict[str, str]]:
    """The event table of a one-message trace, cut at the header's column starts."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TIME (UTC)"))
    header = lines[start]
    cols = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(cols, cols[1:] + [None])]
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append({n: line[a:b].strip() for n, a, b in zip(names, cols, cols[1:] + [None])})
    return rows


def read_inbox(bridge: RunningBridge) -> None:
    """Anna's client opens her newest letter (FETCH BODY[] sets \\Seen)."""
    c = imap_client(bridge, ANNA)
    try:
        typ, data = c.select("INBOX")
        assert typ == "OK"
        assert c.fetch(data[0].decode(), "(BODY[])")[0] == "OK"
    finally:
        c.logout()


def test_trace_tells_a_letters_story_in_order(bridge: RunningBridge, cli: Cli) -> None:
    assert cli("consent", "grant", ANNA, "kommune").code == 0
    uuid = letter(bridge)
    read_inbox(bridge)
    settled(bridge)
    r = cli("trace", uuid)
    assert r.code == 0, r.err
    assert f"message:    {uuid}" in r.out and "Message-ID: <trace-1@kommune.test>" in r.out
    assert "subject:    Indkaldelse" in r.out
    rows = table_rows(r.out)
    events = [row["EVENT"] for row in rows]
    told = ("submitted", "accepted", "delivered: inbox", "delivered: Sent copy", "read")
    story = [e for e in events if e in told]
    assert story[:2] == ["submitted", "accepted"] and story[-1] == "read"
    assert sorted(story[2:-1]) == ["delivered: Sent copy", "delivered: inbox"]
    times = [row["TIME (UTC)"] for row in rows]
    assert all(TIME.match(t) for t in times) and times == sorted(times)
    by_event = {row["EVENT"]: row for row in rows}
    assert by_event["accepted"]["ACTOR"] == CASEWORKER and by_event["accepted"]["RESULT"] == "ok"
    assert by_event["accepted"]["WHERE"] == "(smtp)"
    assert by_event["delivered: inbox"]["ACTOR"] == "delivery"
    assert by_event["delivered: inbox"]["WHERE"] == f"{ANNA} INBOX (worker)"
    assert by_event["delivered: Sent copy"]["WHERE"] == f"{CASEWORKER} Sent (worker)"
    assert (by_event["read"]["ACTOR"], by_event["read"]["WHERE"]) == (ANNA, f"{ANNA} (imap)")
    assert by_event["read"]["DETAILS"] == "standing consent: the sender is told"
    receipts = [row["DETAILS"] for row in rows if row["EVENT"] == "receipt issued"]
    assert any(d.startswith("event=ContentAccessTracking evidence_id=") for d in receipts), receipts
    assert "sha256" not in r.out.split("TIME (UTC)")[1]            # details are short


def test_trace_by_message_id_with_or_without_brackets(bridge: RunningBridge, cli: Cli) -> None:
    uuid = letter(bridge)
    for ident in ("<trace-1@kommune.test>", "trace-1@kommune.test"):
        r = cli("trace", ident, "--json")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert [m["uuid"] for m in doc["messages"]] == [uuid]


def test_trace_json_has_message_fields_and_events_in_time_order(bridge: RunningBridge, cli: Cli) -> None:
    uuid = letter(bridge)
    (msg,) = json.loads(cli("trace", uuid, "--json").out)["messages"]
    assert (msg["tenant"], msg["sender_login"], msg["from_address"]) == ("kommune", CASEWORKER, JOBCENTER)
    assert msg["state"] == "delivered" and msg["message_id"] == "<trace-1@kommune.test>"
    assert sorted((r["recipient"], r["kind"], r["state"]) for r in msg["recipients"]) == \
        [(ANNA_CPR_ADDR, "inbox", "done"), (JOBCENTER, "sent", "done")]
    events = msg["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.index("submitted") < kinds.index("submit.accepted") < kinds.index("delivered")
    times = [dt.datetime.fromisoformat(e["time"]) for e in events]
    assert times == sorted(times) and all(t.utcoffset() == dt.timedelta(0) for t in times)
    accepted = events[kinds.index("submit.accepted")]
    assert accepted["event"] == "accepted" and accepted["details"]["message_id"] == "<trace-1@kommune.test>"
    assert {e["mailbox"] for e in events if e["kind"] == "delivered"} == {"INBOX", "Sent"}


def test_several_messages_sharing_a_message_id_are_each_shown(bridge: RunningBridge, cli: Cli) -> None:
    first = letter(bridge, "<shared@clients.test>")
    with login(bridge, ANNA) as c:
        second = send(c, ANNA, JOBCENTER,
                      message(ANNA, JOBCENTER, "Svar", message_id="<shared@clients.test>"))
    settled(bridge)
    r = cli("trace", "<shared@clients.test>")
    assert r.code == 0
    assert r.out.index(f"message:    {first}") < r.out.index(f"message:    {second}")
    assert r.out.count("TIME (UTC)") == 2
    doc = json.loads(cli("trace", "shared@clients.test", "--json").out)
    assert [(m["uuid"], m["sender_login"]) for m in doc["messages"]] == [(first, CASEWORKER), (second, ANNA)]
    assert all(e["kind"] for m in doc["messages"] for e in m["events"])


def test_unknown_id_is_a_clear_error(bridge: RunningBridge, cli: Cli) -> None:
    letter(bridge)
    for ident in ("0b0e6a2c-5f1d-4c1e-9d7e-000000000000", "<nobody@nowhere.test>"):
        r = cli("trace", ident)
        assert r.code == 1 and r.out == ""
        assert f"no message has the UUID or Message-ID {ident!r}" in r.err


@pytest.mark.parametrize("db", ["sqlite"])
def test_unknown_kinds_are_shown_as_they_are_and_secrets_never(bridge: RunningBridge, cli: Cli) -> None:
    from bridge.core.audit import AuditEvent
    uuid = letter(bridge)
    bridge.store.append_audit(AuditEvent(
        time=dt.datetime.now(dt.timezone.utc), chain="kommune", kind="journal.filed", result="ok",
        actor="journal", message_uuid=uuid, protocol="worker",
        details={"case": "S-2026-1", "api_key": "k3y-v4lue", "password": "hunter2", "keyword": "$Handling"}))
    r = cli("trace", uuid)
    (row,) = [row for row in table_rows(r.out) if row["EVENT"] == "journal.filed"]
    assert row["DETAILS"] == "case=S-2026-1 keyword=$Handling"
    assert "k3y-v4lue" not in r.out and "hunter2" not in r.out
    j = cli("trace", uuid, "--json").out
    assert "k3y-v4lue" not in j and "hunter2" not in j and "S-2026-1" in j

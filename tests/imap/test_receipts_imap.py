"""Read status with consent and "who is handling my request", driven by real IMAP clients.

Issue 4, acceptance points 3 and 4; on SQLite and PostgreSQL (the `db` fixture).
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from typing import Any

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.imap import imap_client
from tests.helpers.smtp import login, message, send, settled, wait_for


def cli(bridge: RunningBridge, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bridge.admin.cli", *args, "--config",
                           str(bridge.app.config.path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def kinds(bridge: RunningBridge, owner: str) -> list[str]:
    out = []
    for e in bridge.store.mailbox_entries(owner, "Receipts"):
        raw = bridge.app.blobs.get(e["sha256"])
        out.append(email.message_from_bytes(raw, policy=email.policy.default)["X-DP2-Receipt"])
    return out


def letter(bridge: RunningBridge, subject: str) -> str:
    with login(bridge, CASEWORKER) as c:
        uuid = send(c, JOBCENTER, ANNA_CPR_ADDR, message(JOBCENTER, ANNA_CPR_ADDR, subject))
    wait_for(lambda: any(e["message_uuid"] == uuid for e in bridge.store.mailbox_entries(ANNA)))
    return uuid


def read_newest(bridge: RunningBridge) -> None:
    """Anna's client opens her newest letter (FETCH BODY[] sets \\Seen)."""
    c = imap_client(bridge, ANNA)
    try:
        typ, data = c.select("INBOX")
        assert typ == "OK"
        typ, _ = c.fetch(data[0].decode(), "(BODY[])")
        assert typ == "OK"
    finally:
        c.logout()


def test_read_status_only_with_consent(bridge: RunningBridge) -> None:
    first = letter(bridge, "Uden samtykke")
    read_newest(bridge)
    settled(bridge)
    assert "ContentAccessTracking" not in kinds(bridge, CASEWORKER)
    # Nothing in the sender's trail either: the read is in Anna's own chain only.
    assert [e["chain"] for e in bridge.store.audit_events(message_uuid=first) if e["kind"] == "read"] == ["borger"]

    cli(bridge, "consent", "grant", ANNA, "kommune")
    second = letter(bridge, "Med samtykke")
    read_newest(bridge)
    wait_for(lambda: "ContentAccessTracking" in kinds(bridge, CASEWORKER), timeout=10)
    settled(bridge)
    assert kinds(bridge, CASEWORKER).count("ContentAccessTracking") == 1
    read = [e for e in bridge.store.audit_events(message_uuid=second) if e["kind"] == "read"]
    assert [e["chain"] for e in read] == ["kommune"]

    cli(bridge, "consent", "revoke", ANNA, "kommune")
    letter(bridge, "Samtykke trukket tilbage")
    read_newest(bridge)
    settled(bridge)
    assert kinds(bridge, CASEWORKER).count("ContentAccessTracking") == 1
    assert "ContentAccessTracking" not in kinds(bridge, ANNA)
    assert "ok: kommune" in cli(bridge, "audit", "verify")      # every chain still holds


def anna_writes(bridge: RunningBridge, subject: str) -> str:
    with login(bridge, ANNA) as c:
        return send(c, ANNA, JOBCENTER, message(ANNA, JOBCENTER, subject))


def handling_receipts(bridge: RunningBridge) -> list[Any]:
    """The evidence of Anna's HandlingStarted receipts, oldest first."""
    from bridge.receipts.parse import parse_receipt
    out = []
    for e in bridge.store.mailbox_entries(ANNA, "Receipts"):
        raw = bridge.app.blobs.get(e["sha256"])
        if b"X-DP2-Receipt: HandlingStarted" in raw:
            out.append(parse_receipt(raw).evidence)
    return out


def test_moving_a_citizens_message_out_of_the_shared_inbox_tells_her_who_handles_it(bridge: RunningBridge) -> None:
    anna_writes(bridge, "Min sag")
    wait_for(lambda: bridge.store.mailbox_entries(JOBCENTER))
    c = imap_client(bridge, CASEWORKER)
    try:
        assert c.create("Sager")[0] == "OK"
        assert c.select('"Shared/jobcenter/INBOX"')[0] == "OK"
        typ, data = c.uid("MOVE", "1:*", "Sager")
        assert typ == "OK", data
    finally:
        c.logout()
    got = wait_for(lambda: handling_receipts(bridge), timeout=10)
    settled(bridge)
    assert len(handling_receipts(bridge)) == 1
    assert got[0].handler == "Jobcenter" and got[0].recipient.address == JOBCENTER
    assert got[0].handler_person is None                # the policy is off by default
    assert got[0].issuer == "kommune"                   # the authority attests it

    # With the tenant's policy on, the caseworker is named; $Handling counts as taking it.
    cli(bridge, "tenant", "policy", "kommune", "handling_names_caseworker=true")
    anna_writes(bridge, "Min anden sag")
    wait_for(lambda: bridge.store.mailbox_entries(JOBCENTER))
    c = imap_client(bridge, CASEWORKER)
    try:
        assert c.select('"Shared/jobcenter/INBOX"')[0] == "OK"
        typ, data = c.uid("STORE", "1:*", "+FLAGS", "($Handling)")
        assert typ == "OK", data
        c.uid("STORE", "1:*", "+FLAGS", "($Handling)")    # again: no second receipt
    finally:
        c.logout()
    wait_for(lambda: len(handling_receipts(bridge)) == 2, timeout=10)
    settled(bridge)
    receipts = handling_receipts(bridge)
    assert len(receipts) == 2
    assert receipts[1].handler == "Jobcenter" and receipts[1].handler_person == "Sagsbehandler Demo"
    assert "ok: kommune" in cli(bridge, "audit", "verify")


def test_opening_a_shared_mailbox_is_in_the_trail(bridge: RunningBridge) -> None:
    c = imap_client(bridge, CASEWORKER)
    try:
        assert c.select('"Shared/jobcenter/INBOX"', readonly=True)[0] == "OK"
        assert c.select("INBOX")[0] == "OK"             # its own mailbox: not recorded
    finally:
        c.logout()
    access = [e for e in bridge.store.audit_events(chain="kommune") if e["kind"] == "mailbox.access"]
    assert [(e["actor"], e["subject"], e["details"]["mode"]) for e in access] == [
        (CASEWORKER, JOBCENTER, "examine")]

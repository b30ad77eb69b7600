"""A MeMo submitted by a tenant's system (the use case the drop folder and the HTTP API call):
validated, addressed by CPR under the SMTP rules, delivered as mail Thunderbird shows, keywords
set, held until doNotDeliverUntilDate.  SQLite and PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import subprocess
import sys
import uuid as uuidlib
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import icalendar
import pytest

from bridge.core.service import SessionInfo
from bridge.digitalpost import MemoInvalid, write_memo
from tests.conftest import ANNA, RunningBridge
from tests.helpers.imap import imap_client
from tests.helpers.memo import full_memo
from tests.helpers.smtp import wait_for

SYSTEM = "system@kommune.dp2.test"
CTX = SessionInfo("memo-test", "dropfolder", "local", True)


def cli(bridge: RunningBridge, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bridge.admin.cli", *args, "--config",
                           str(bridge.app.config.path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def memo_for_anna(**header: object) -> bytes:
    msg = full_memo()
    h = msg.message_header
    recipient = dataclasses.replace(h.recipient, recipient_id="0101701234", id_type="CPR")
    h = dataclasses.replace(h, recipient=recipient, message_uuid=str(uuidlib.uuid4()),
                            **{"do_not_deliver_until_date": None, **header})
    return write_memo(dataclasses.replace(msg, message_header=h), "1.2")


def first_in_inbox(bridge: RunningBridge, items: str = "(BODY.PEEK[])") -> list:
    """FETCH of the first message in Anna's INBOX, as her client sees it."""
    c = imap_client(bridge, ANNA)
    try:
        c.select("INBOX")
        typ, data = c.fetch("1", items)
        assert typ == "OK"
        return data
    finally:
        c.logout()


@pytest.fixture
def system(bridge: RunningBridge) -> RunningBridge:
    cli(bridge, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
    cli(bridge, "contact-point", "grant", "jobcenter@kommune.dp2.test", SYSTEM)
    return bridge


def test_a_system_memo_reaches_anna_as_mail_her_client_understands(system: RunningBridge) -> None:
    service = system.app.service
    principal = service.system_principal("kommune")
    accepted = service.submit_memo(principal, memo_for_anna(), CTX)
    again = service.submit_memo(principal, memo_for_anna(), CTX)
    assert again.uuid != accepted.uuid                                   # a new messageUUID: a new message
    wait_for(lambda: len(system.store.mailbox_entries(ANNA)) == 2, timeout=10)
    data = first_in_inbox(system, "(FLAGS BODY.PEEK[])")
    flags, raw = data[0][0], data[0][1]
    assert b"$Mandatory" in flags and b"$LegalNotice" in flags
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "jobcenter@kommune.dp2.test"
    types = [p.get_content_type() for p in msg.walk()]
    assert "text/calendar" in types and "application/xml" in types
    calendar = next(p for p in msg.walk() if p.get_content_type() == "text/calendar")
    parsed = icalendar.Calendar.from_ical(calendar.get_payload(decode=True))
    assert parsed["METHOD"] == "REQUEST" and any(c.name == "VEVENT" for c in parsed.walk())
    assert b"0101701234" not in raw.split(b"\r\n\r\n", 1)[0]            # no CPR in Anna's header


def test_the_same_memo_twice_is_one_message(system: RunningBridge) -> None:
    service = system.app.service
    principal = service.system_principal("kommune")
    memo = memo_for_anna()
    first = service.submit_memo(principal, memo, CTX)
    second = service.submit_memo(principal, memo, CTX)
    assert second.uuid == first.uuid and second.duplicate


def test_invalid_memo_names_the_element_and_stores_nothing(system: RunningBridge) -> None:
    service = system.app.service
    bad = memo_for_anna().replace(b"<memo:label>", b"<memo:label>" + b"x" * 300, 1)
    with pytest.raises(MemoInvalid) as refused:
        service.submit_memo(service.system_principal("kommune"), bad, CTX)
    assert any(e.path.endswith("memo:label") for e in refused.value.errors)
    assert system.store.mailbox_entries(ANNA) == []


def test_do_not_deliver_until_date_holds_the_letter(system: RunningBridge) -> None:
    service = system.app.service
    later = date.today() + timedelta(days=3)
    accepted = service.submit_memo(service.system_principal("kommune"),
                                   memo_for_anna(do_not_deliver_until_date=later), CTX)
    wait_for(lambda: system.store.mailbox_entries(SYSTEM, "Sent"), timeout=5)
    assert system.store.mailbox_entries(ANNA) == []
    accepted_event = [e for e in system.store.audit_events(message_uuid=accepted.uuid)
                      if e["kind"] == "submit.accepted"][0]
    midnight = datetime.combine(later, time(0), tzinfo=ZoneInfo("Europe/Copenhagen"))
    assert accepted_event["details"]["release_at"] == midnight.astimezone(timezone.utc).isoformat()


def test_a_nemsms_goes_to_the_notification_outbox_not_a_mailbox(system: RunningBridge) -> None:
    from sqlalchemy import select

    from bridge.digitalpost import parse_memo
    from bridge.store import models as m
    from tests.helpers.memo import example
    msg = parse_memo(example("example_v1.2_MeMo_NemSMS.xml"))
    h = msg.message_header
    h = dataclasses.replace(h, message_uuid=str(uuidlib.uuid4()), do_not_deliver_until_date=None,
                            recipient=dataclasses.replace(h.recipient, recipient_id="0101701234", id_type="CPR"))
    service = system.app.service
    accepted = service.submit_memo(service.system_principal("kommune"),
                                   write_memo(dataclasses.replace(msg, message_header=h), "1.2"), CTX)
    wait_for(lambda: system.store.mailbox_entries(SYSTEM, "Sent"), timeout=5)
    wait_for(lambda: system.store.message(accepted.uuid)["state"] == "delivered", timeout=5)
    assert system.store.mailbox_entries(ANNA) == []
    with system.store.ro() as s:
        rows = s.execute(select(m.Notification.channel, m.Notification.recipient, m.Notification.text)).all()
    assert rows == [("nemsms", "0101701234@cpr.dp2.test", h.notification or h.label)]
    # Evidenced like any submission: the acceptance is in the trail and receipted.
    kinds = [e["kind"] for e in system.store.audit_events(message_uuid=accepted.uuid)]
    assert "submit.accepted" in kinds
    wait_for(lambda: any(e["kind"] == "receipt.issued"
                         for e in system.store.audit_events(message_uuid=accepted.uuid)), timeout=10)


def test_held_until_the_date_then_delivered_once(home, tmp_path) -> None:
    """Acceptance 6 with an injected clock: invisible before doNotDeliverUntilDate, then once."""
    from bridge.clock import FixedClock
    from tests.conftest import start_bridge
    clock = FixedClock(datetime.now(timezone.utc))
    bridge = start_bridge(home, clock)
    try:
        cli(bridge, "account", "add", SYSTEM, "--system")
        cli(bridge, "contact-point", "grant", "jobcenter@kommune.dp2.test", SYSTEM)
        service = bridge.app.service
        day = (clock.now() + timedelta(days=2)).date()
        accepted = service.submit_memo(service.system_principal("kommune"),
                                       memo_for_anna(do_not_deliver_until_date=day), CTX)
        wait_for(lambda: bridge.store.mailbox_entries(SYSTEM, "Sent"), timeout=5)
        clock.advance(24 * 3600)                        # the day before: still held
        bridge.loop.call_soon_threadsafe(bridge.app.worker.wake)
        wait_for(lambda: bridge.store.pending_jobs() == 1, timeout=5)
        assert bridge.store.mailbox_entries(ANNA) == []
        clock.advance(2 * 24 * 3600)                    # past the date: delivered
        bridge.loop.call_soon_threadsafe(bridge.app.worker.wake)
        entries = wait_for(lambda: bridge.store.mailbox_entries(ANNA), timeout=5)
        assert [e["message_uuid"] for e in entries] == [accepted.uuid]
        bridge.loop.call_soon_threadsafe(bridge.app.worker.wake)
        wait_for(lambda: bridge.store.pending_jobs() == 0, timeout=5)
        assert len(bridge.store.mailbox_entries(ANNA)) == 1
    finally:
        bridge.stop()


def test_round_trip_through_a_delivered_copy(system: RunningBridge) -> None:
    """Acceptance 2: a MeMo with every element -> the copy Anna's client fetches over IMAP ->
    MeMo again, equal field by field (documents byte-exact)."""
    from bridge.digitalpost import parse_memo
    from bridge.digitalpost.mail import mail_to_memo
    from tests.helpers.memo import differences
    xml = memo_for_anna()
    original = parse_memo(xml)
    service = system.app.service
    service.submit_memo(service.system_principal("kommune"), xml, CTX)
    wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)
    data = first_in_inbox(system)
    h = original.message_header
    again = mail_to_memo(data[0][1], sender=h.sender, recipient=h.recipient, message_uuid=h.message_uuid,
                         now=datetime.now(timezone.utc))
    assert differences(original, again) == []


def test_a_pdf_letter_is_a_pdf_attachment_for_the_client(system: RunningBridge) -> None:
    """Acceptance 3: a PDF MainDocument reaches Anna's client as application/pdf."""
    from bridge.digitalpost import model as m
    from tests.helpers.memo import PDF
    msg = full_memo()
    body = msg.message_body
    letter = dataclasses.replace(body.main_document, files=(
        m.File(encoding_format="application/pdf", filename="afgoerelse.pdf", language="da", content=PDF),))
    msg = dataclasses.replace(msg, message_body=dataclasses.replace(body, main_document=letter))
    h = dataclasses.replace(msg.message_header, message_uuid=str(uuidlib.uuid4()), do_not_deliver_until_date=None,
                            recipient=dataclasses.replace(msg.message_header.recipient, recipient_id="0101701234",
                                                          id_type="CPR"))
    xml = write_memo(dataclasses.replace(msg, message_header=h), "1.2")
    service = system.app.service
    service.submit_memo(service.system_principal("kommune"), xml, CTX)
    wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)
    data = first_in_inbox(system)
    parsed = email.message_from_bytes(data[0][1], policy=email.policy.default)
    pdfs = [p for p in parsed.walk() if p.get_content_type() == "application/pdf"
            and p.get_filename() == "afgoerelse.pdf"]
    assert len(pdfs) == 1 and pdfs[0].get_payload(decode=True) == PDF

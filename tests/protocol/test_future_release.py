"""RFC 4865 FUTURERELEASE: a message held until a time is invisible to its recipient until then,
then delivered once; the sender's Sent copy and acceptance receipt come at once.  SQLite and
PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import datetime as dt
import time

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.smtp import login, message, wait_for


def test_ehlo_offers_futurerelease_and_holdfor_holds_delivery(bridge: RunningBridge) -> None:
    with login(bridge, CASEWORKER) as c:
        assert c.has_extn("futurerelease")
        max_seconds = int(c.esmtp_features["futurerelease"].split()[0])
        assert max_seconds >= 24 * 3600
        c.mail(JOBCENTER, ["HOLDFOR=3"])
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
        code, reply = c.data(message(JOBCENTER, ANNA_CPR_ADDR, "Senere"))
        assert code == 250
        uuid = reply.decode().split()[2]
    sent_at = time.monotonic()
    wait_for(lambda: bridge.store.mailbox_entries(CASEWORKER, "Sent"))
    time.sleep(1.0)
    assert bridge.store.mailbox_entries(ANNA) == []               # held: Anna sees nothing yet
    entries = wait_for(lambda: bridge.store.mailbox_entries(ANNA), timeout=10)
    assert time.monotonic() - sent_at >= 2.5
    assert [e["message_uuid"] for e in entries] == [uuid]
    time.sleep(1.5)
    assert len(bridge.store.mailbox_entries(ANNA)) == 1           # delivered once
    accepted = [e for e in bridge.store.audit_events(message_uuid=uuid) if e["kind"] == "submit.accepted"]
    assert "release_at" in accepted[0]["details"]


def test_bad_or_too_distant_release_times_are_refused(bridge: RunningBridge) -> None:
    far = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with login(bridge, CASEWORKER) as c:
        for option in ("HOLDFOR=soon", "HOLDUNTIL=tomorrow", f"HOLDUNTIL={far}"):
            code, reply = c.mail(JOBCENTER, [option])
            assert code == 501 and reply.startswith(b"5.5.4"), reply
            c.rset()
        soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert c.mail(JOBCENTER, [f"HOLDUNTIL={soon}"])[0] == 250

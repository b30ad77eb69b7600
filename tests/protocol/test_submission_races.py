"""Submission under concurrency and directory changes: the same message sent on several
connections at the same moment lands once (the Message-ID check is inside the accepting
transaction), and an account disabled with `dp2bridge` stops receiving within the 2 s the
directory cache may hold it.  SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.smtp import login, message, send, settled, wait_for
from tests.protocol.test_httpapi import cli


def test_the_same_message_sent_at_once_on_four_connections_lands_once(bridge: RunningBridge) -> None:
    raw = message(JOBCENTER, ANNA_CPR_ADDR, "Samtidig", message_id="<race-1@kommune.test>")
    clients = [login(bridge, CASEWORKER) for _ in range(4)]
    for c in clients:
        c.mail(JOBCENTER)
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
    start = threading.Barrier(len(clients))
    replies: list[tuple[int, bytes]] = []

    def data(c) -> None:                                   # type: ignore[no-untyped-def]
        start.wait()
        replies.append(c.data(raw))
    threads = [threading.Thread(target=data, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in clients:
        c.quit()
    assert [code for code, _ in replies] == [250] * 4, replies
    uuids = {reply.decode().split()[2] for _, reply in replies}
    assert len(uuids) == 1                                 # every client got the one acceptance
    settled(bridge)
    assert [e["message_uuid"] for e in bridge.store.mailbox_entries(ANNA)] == list(uuids)


def test_a_disabled_account_stops_receiving_within_two_seconds(bridge: RunningBridge) -> None:
    with login(bridge, CASEWORKER) as c:
        send(c, JOBCENTER, ANNA_CPR_ADDR, message(JOBCENTER, ANNA_CPR_ADDR, "Før"))   # looked up: cached
    cli(bridge, "account", "disable", ANNA)
    disabled_at = time.monotonic()

    def refused() -> bool:
        with login(bridge, CASEWORKER) as c:
            c.mail(JOBCENTER)
            code, _ = c.rcpt(ANNA_CPR_ADDR)
            return code >= 500
    wait_for(refused, timeout=5, interval=0.2)
    assert time.monotonic() - disabled_at < 2 + 1.5        # the cache's 2 s, plus a login or two

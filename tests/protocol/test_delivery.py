"""The delivery worker: new-message events for IDLE, and jobs that survive restarts.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

from bridge.app import build_service
from bridge.clock import SystemClock
from bridge.config import Config
from bridge.core.service import SessionInfo
from bridge.store.blobs import FileBlobStore
from bridge.store.sql import SqlStore
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, PASSWORDS, RunningBridge, start_bridge
from tests.helpers.smtp import login, message, wait_for

CTX = SessionInfo("test", "smtp", "127.0.0.1", True)


def accept_offline(config: Config, count: int) -> list[str]:
    """Accept `count` letters to Anna through the submission use case with no server running."""
    store = SqlStore(config.database_url, SystemClock())
    try:
        service = build_service(config, store, FileBlobStore(config.resolve(config.bridge.blob_dir)),
                                SystemClock())
        principal = service.authenticate(CASEWORKER, PASSWORDS[CASEWORKER], CTX)
        target = service.check_rcpt(principal, ANNA_CPR_ADDR, CTX)
        return [service.submit(principal, JOBCENTER, [(ANNA_CPR_ADDR, target)],
                               message(JOBCENTER, ANNA_CPR_ADDR, f"offline {i}"), CTX).uuid
                for i in range(count)]
    finally:
        store.close()


def test_queued_jobs_are_delivered_after_start(home: Config) -> None:
    uuids = accept_offline(home, 3)
    running = start_bridge(home)
    try:
        got = wait_for(lambda: len(running.store.mailbox_entries(ANNA)) == 3 and
                       running.store.mailbox_entries(ANNA), timeout=5)
        assert sorted(e["message_uuid"] for e in got) == sorted(uuids)
        assert [e["uid"] for e in got] == [1, 2, 3]
    finally:
        running.stop()


def test_jobs_claimed_by_a_crashed_worker_are_delivered_once(home: Config) -> None:
    uuids = accept_offline(home, 2)
    store = SqlStore(home.database_url, SystemClock())
    try:
        claimed = store.claim_jobs(10, lease_seconds=3600)   # a worker that then died
        assert len(claimed) == 4                               # 2 INBOX + 2 Sent
    finally:
        store.close()
    running = start_bridge(home)
    try:
        wait_for(lambda: running.store.pending_jobs() == 0, timeout=5)
        inbox = running.store.mailbox_entries(ANNA)
        sent = running.store.mailbox_entries(CASEWORKER, "Sent")
        assert sorted(e["message_uuid"] for e in inbox) == sorted(uuids)
        assert sorted(e["message_uuid"] for e in sent) == sorted(uuids)
        delivered = [e for e in running.store.audit_events("kommune") if e["kind"] == "delivered"]
        assert len(delivered) == 4
    finally:
        running.stop()


def test_delivery_publishes_new_message_events(bridge: RunningBridge) -> None:
    inbox_id = _inbox_id(bridge)
    queue = bridge.call(_subscribe(bridge, inbox_id))
    with login(bridge, CASEWORKER) as c:
        c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR))
    filed = bridge.call(asyncio.wait_for(queue.get(), 5))
    entries = bridge.store.mailbox_entries(ANNA)
    assert (filed.mailbox_id, filed.uid, filed.modseq) == (inbox_id, entries[0]["uid"], entries[0]["modseq"])
    assert filed.message_uuid == entries[0]["message_uuid"]


def _inbox_id(bridge: RunningBridge) -> int:
    from sqlalchemy import select
    from bridge.store import models as m
    with bridge.store.ro() as s:
        account = s.scalar(select(m.Account).where(m.Account.login == ANNA))
        return s.scalar(select(m.Mailbox.id).where(m.Mailbox.account_id == account.id,
                                                    m.Mailbox.name == "INBOX"))


async def _subscribe(bridge: RunningBridge, mailbox_id: int) -> asyncio.Queue:
    return bridge.app.events.subscribe(mailbox_id)

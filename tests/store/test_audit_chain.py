"""The audit trail in the store: one linear hash chain per tenant, also under concurrency."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import update

from bridge.clock import FixedClock
from bridge.core.audit import GENESIS, event_from_row, link_hash, verify_chain
from bridge.store import models as m
from bridge.store.sql import SqlStore
from tests.store.conftest import ANNA, CASEWORKER, JOBCENTER, Demo, event

THREADS, PER_THREAD = 8, 25


def assert_linear(rows: list[dict]) -> None:
    """seq 1..n without gaps, each prev_hash the previous hash, each hash recomputed from the row."""
    prev = GENESIS
    for n, row in enumerate(rows, start=1):
        assert row["seq"] == n
        assert row["prev_hash"] == prev
        assert row["hash"] == link_hash(prev, event_from_row(row))
        prev = row["hash"]


def test_events_form_one_chain_per_tenant(store: SqlStore, clock: FixedClock) -> None:
    for i in range(6):
        chain = ("kommune", "advokat")[i % 2]
        store.append_audit(event(clock, chain, "login", details={"i": i, "ip": "192.0.2.7"}))
        clock.advance(1)
    for chain in ("kommune", "advokat"):
        rows = store.audit_events(chain)
        assert [r["details"]["i"] for r in rows] == list(range(0 if chain == "kommune" else 1, 6, 2))
        assert_linear(rows)
        assert verify_chain(rows, head=store.audit_heads()[chain]) is None


def test_append_returns_the_stored_hash(store: SqlStore, clock: FixedClock) -> None:
    digest = store.append_audit(event(clock, "kommune", "login"))
    (row,) = store.audit_events("kommune")
    assert row["hash"] == digest == link_hash(GENESIS, event_from_row(row))
    assert store.audit_heads() == {"kommune": (1, digest)}


def test_concurrent_appends_keep_the_chain_linear(store: SqlStore, clock: FixedClock) -> None:
    # The chain does not exist yet: the threads also race to create its head.
    start = threading.Barrier(THREADS)

    def append(t: int) -> None:
        start.wait()
        for i in range(PER_THREAD):
            store.append_audit(event(clock, "kommune", "login", details={"t": t, "i": i}))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(append, range(THREADS)))
    rows = store.audit_events("kommune")
    assert len(rows) == THREADS * PER_THREAD
    assert_linear(rows)
    assert {(r["details"]["t"], r["details"]["i"]) for r in rows} == \
        {(t, i) for t in range(THREADS) for i in range(PER_THREAD)}
    assert store.audit_heads()["kommune"] == (len(rows), rows[-1]["hash"])


def test_tampering_with_details_is_detected(store: SqlStore, clock: FixedClock) -> None:
    for i in range(5):
        store.append_audit(event(clock, "kommune", "login", details={"ip": "192.0.2.1", "i": i}))
    assert verify_chain(store.audit_events("kommune")) is None
    with store.tx() as s:       # behind the store API's back, as an intruder with SQL access would
        s.execute(update(m.AuditEvent).where(m.AuditEvent.chain == "kommune", m.AuditEvent.seq == 3)
                  .values(details={"ip": "203.0.113.66", "i": 2}))
    assert verify_chain(store.audit_events("kommune")) == 3


def test_deleting_the_newest_event_is_detected_against_the_head(store: SqlStore, clock: FixedClock) -> None:
    for i in range(3):
        store.append_audit(event(clock, "kommune", "login", details={"i": i}))
    with store.tx() as s:
        s.query(m.AuditEvent).filter(m.AuditEvent.seq == 3).delete()
    rows = store.audit_events("kommune")
    assert verify_chain(rows) is None
    assert verify_chain(rows, head=store.audit_heads()["kommune"]) == 3


def test_no_store_operation_updates_or_deletes_audit_rows(demo: Demo, clock: FixedClock) -> None:
    """Every write path of the store, watched at the SQL level."""
    statements: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    store = demo.store
    sa_event.listen(store.write_engine, "before_cursor_execute", watch)
    try:
        demo.accept(ANNA, [JOBCENTER])
        demo.accept(CASEWORKER, ["0101701234@cpr.dp2.test"])
        jobs = store.claim_jobs(10, 60)
        store.fail_job(jobs[0], "boom", clock.now(), event(clock, "borger", "delivery.deferred"))
        store.release_leases()
        for job in store.claim_jobs(10, 60):
            store.file(job, job.sha256, None, event(clock, job.tenant_name, "delivered"))
        store.set_password(ANNA, "y", event(clock, "borger", "account.password"))
        store.record_login(None, event(clock, "borger", "login"))
        store.revoke(JOBCENTER, CASEWORKER, event(clock, "kommune", "contact-point.revoked"))
    finally:
        sa_event.remove(store.write_engine, "before_cursor_execute", watch)
    assert any(s.startswith("insert into audit_events") for s in statements)
    touching = [s for s in statements if re.match(r"(update|delete from) audit_events\b", s)]
    assert touching == []
    assert verify_chain(store.audit_events("borger"), head=store.audit_heads()["borger"]) is None


def test_a_rolled_back_action_leaves_no_event(store: SqlStore, clock: FixedClock) -> None:
    store.append_audit(event(clock, "kommune", "login"))
    try:
        with store.tx() as s:
            store._audit(s, event(clock, "kommune", "tenant.added"))
            raise RuntimeError("the action failed")
    except RuntimeError:
        pass
    store.append_audit(event(clock, "kommune", "login"))
    rows = store.audit_events("kommune")
    assert [r["kind"] for r in rows] == ["login", "login"]
    assert_linear(rows)

"""The durable delivery queue: leases, exactly-once filing, UIDs and MODSEQs under concurrency."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from bridge.clock import FixedClock
from bridge.core.messages import Job
from bridge.store import models as m
from bridge.store.sql import SqlStore
from tests.store.conftest import ANNA, CASEWORKER, JOBCENTER, LAWYER, Demo, event

THREADS = 8
LEASE = 300.0


def delivered_event(clock: FixedClock, job: Job):  # noqa: ANN201
    return event(clock, job.tenant_name, "delivered", subject=job.owner_address,
                 message_uuid=job.message_uuid, details={"job": job.id})


def mailbox_row(store: SqlStore, owner: str, name: str = "INBOX") -> m.Mailbox:
    with store.ro() as s:
        owner_q = select(m.Account.id).where(m.Account.login == owner)
        cp_q = select(m.ContactPoint.id).where(m.ContactPoint.address == owner)
        return s.scalars(select(m.Mailbox).where(
            m.Mailbox.name == name,
            (m.Mailbox.account_id.in_(owner_q)) | (m.Mailbox.contact_point_id.in_(cp_q)))).one()


def job_states(store: SqlStore) -> dict[int, str]:
    with store.ro() as s:
        return dict(s.execute(select(m.DeliveryJob.id, m.DeliveryJob.state)).all())


def delivered_events(store: SqlStore) -> list[dict]:
    return [e for e in store.audit_events() if e["kind"] == "delivered"]


def test_accept_queues_an_inbox_and_a_sent_job(demo: Demo) -> None:
    uuid_ = demo.accept(ANNA, [JOBCENTER])
    jobs = demo.store.claim_jobs(10, LEASE)
    assert sorted((j.kind, j.owner_address) for j in jobs) == [("inbox", JOBCENTER), ("sent", ANNA)]
    assert {j.message_uuid for j in jobs} == {uuid_}
    assert all(j.attempts == 1 for j in jobs)
    assert demo.store.claim_jobs(10, LEASE) == []       # leases are valid: nothing to claim
    assert demo.store.pending_jobs() == 2


def test_concurrent_claimers_never_share_a_job(demo: Demo) -> None:
    for i in range(12):
        demo.accept((ANNA, LAWYER)[i % 2], [JOBCENTER])
    expected = set(job_states(demo.store))
    start = threading.Barrier(THREADS)

    def claim_all(_: int) -> list[Job]:
        start.wait()
        mine: list[Job] = []
        while batch := demo.store.claim_jobs(2, LEASE):
            assert len({j.lease_token for j in batch}) == 1
            mine += batch
        return mine

    with ThreadPoolExecutor(THREADS) as pool:
        claimed = [j for jobs in pool.map(claim_all, range(THREADS)) for j in jobs]
    ids = [j.id for j in claimed]
    assert len(ids) == len(set(ids)) == len(expected) == 24
    assert set(ids) == expected
    assert set(job_states(demo.store).values()) == {"running"}


def test_expired_lease_is_claimed_again_and_the_stale_claim_files_nothing(
        demo: Demo, clock: FixedClock) -> None:
    demo.accept(ANNA, [JOBCENTER])
    first = {j.kind: j for j in demo.store.claim_jobs(10, LEASE)}
    clock.advance(LEASE + 1)
    second = {j.kind: j for j in demo.store.claim_jobs(10, LEASE)}
    assert second["inbox"].id == first["inbox"].id
    assert second["inbox"].lease_token != first["inbox"].lease_token
    assert second["inbox"].attempts == 2

    stale = first["inbox"]
    assert demo.store.file(stale, stale.sha256, None, delivered_event(clock, stale)) is None
    assert demo.store.mailbox_entries(JOBCENTER) == []
    assert delivered_events(demo.store) == []

    fresh = second["inbox"]
    filed = demo.store.file(fresh, fresh.sha256, None, delivered_event(clock, fresh))
    assert filed is not None and filed.uid == 1
    assert [e["uid"] for e in demo.store.mailbox_entries(JOBCENTER)] == [1]


def test_released_leases_are_claimable_and_each_job_is_filed_once(demo: Demo, clock: FixedClock) -> None:
    for _ in range(3):
        demo.accept(CASEWORKER, ["0101701234@cpr.dp2.test"])
    before = demo.store.claim_jobs(10, LEASE)
    assert demo.store.claim_jobs(10, LEASE) == []
    assert demo.store.release_leases() == len(before) == 6
    after = demo.store.claim_jobs(10, LEASE)
    assert sorted(j.id for j in after) == sorted(j.id for j in before)

    for old in before:          # the node that claimed first comes back after the restart
        assert demo.store.file(old, old.sha256, None, delivered_event(clock, old)) is None
    for new in after:
        assert demo.store.file(new, new.sha256, None, delivered_event(clock, new)) is not None
        assert demo.store.file(new, new.sha256, None, delivered_event(clock, new)) is None
    assert demo.store.release_leases() == 0
    assert demo.store.claim_jobs(10, LEASE) == []
    assert set(job_states(demo.store).values()) == {"done"}
    assert len(demo.store.mailbox_entries(ANNA)) == 3
    assert len(demo.store.mailbox_entries(CASEWORKER, "Sent")) == 3
    assert len(delivered_events(demo.store)) == 6


def test_a_stale_claim_cannot_fail_a_job_another_worker_filed(demo: Demo, clock: FixedClock) -> None:
    uuid_ = demo.accept(ANNA, [JOBCENTER])
    stale = {j.kind: j for j in demo.store.claim_jobs(10, LEASE)}["inbox"]
    clock.advance(LEASE + 1)
    for job in demo.store.claim_jobs(10, LEASE):
        assert demo.store.file(job, job.sha256, None, delivered_event(clock, job)) is not None
    assert demo.store.message(uuid_)["state"] == "delivered"

    demo.store.fail_job(stale, "timeout", None, event(clock, "borger", "delivery.failed"))
    assert demo.store.message(uuid_)["state"] == "delivered"
    assert set(job_states(demo.store).values()) == {"done"}
    assert [e for e in demo.store.audit_events() if e["kind"] == "delivery.failed"] == []


def test_failed_job_is_retried_later_or_marked_failed(demo: Demo, clock: FixedClock) -> None:
    uuid_ = demo.accept(ANNA, [JOBCENTER])
    jobs = {j.kind: j for j in demo.store.claim_jobs(10, LEASE)}
    job, sent = jobs["inbox"], jobs["sent"]
    assert demo.store.file(sent, sent.sha256, None, delivered_event(clock, sent)) is not None
    demo.store.fail_job(job, "upstream down", clock.now() + dt.timedelta(seconds=60),
                        event(clock, "borger", "delivery.deferred"))
    assert demo.store.claim_jobs(10, LEASE) == []
    clock.advance(61)
    (again,) = demo.store.claim_jobs(10, LEASE)
    assert (again.id, again.attempts) == (job.id, 2)
    demo.store.fail_job(again, "upstream down", None, event(clock, "borger", "delivery.failed"))
    assert demo.store.message(uuid_)["state"] == "failed"
    clock.advance(3600)
    assert demo.store.claim_jobs(10, LEASE) == []
    assert job_states(demo.store) == {job.id: "failed", sent.id: "done"}


def test_concurrent_filing_gives_strictly_increasing_uids_and_modseqs(demo: Demo, clock: FixedClock) -> None:
    n = 24
    uuids = [demo.accept(ANNA, [JOBCENTER], body=f"message {i}") for i in range(n)]
    jobs = demo.store.claim_jobs(2 * n, LEASE)
    inbox = sorted((j for j in jobs if j.kind == "inbox"), key=lambda j: j.message_pk)
    sent = sorted((j for j in jobs if j.kind == "sent"), key=lambda j: j.message_pk)
    # Half the threads file INBOX copies, half the Sent copies of the same messages at the
    # same moment: same mailbox rows, same message rows.
    half = THREADS // 2
    slices = [inbox[i::half] for i in range(half)] + [sent[i::half] for i in range(half)]
    start = threading.Barrier(THREADS)

    def file_all(mine: list[Job]) -> int:
        start.wait()
        return sum(demo.store.file(j, j.sha256, None, delivered_event(clock, j)) is not None for j in mine)

    with ThreadPoolExecutor(THREADS) as pool:
        assert sum(pool.map(file_all, slices)) == 2 * n

    for owner, box in ((JOBCENTER, "INBOX"), (ANNA, "Sent")):
        entries = demo.store.mailbox_entries(owner, box)
        uids = [e["uid"] for e in entries]
        assert uids == list(range(1, n + 1))
        modseqs = [e["modseq"] for e in entries]
        assert modseqs == sorted(set(modseqs))
        row = mailbox_row(demo.store, owner, box)
        assert row.highestmodseq == max(modseqs)
        assert row.uidnext == max(uids) + 1
        assert sorted(e["message_uuid"] for e in entries) == sorted(uuids)
    assert {demo.store.message(u)["state"] for u in uuids} == {"delivered"}
    assert demo.store.pending_jobs() == 0



def test_filing_and_failing_jobs_of_the_same_messages_at_once(demo: Demo, clock: FixedClock) -> None:
    """Both finish (file() and fail_job() take row locks in one order: job, mailbox, message,
    audit head, so PostgreSQL never has to abort one as a deadlock), and a message with a
    job that failed for good stays failed, whichever of its jobs finished last."""
    n = 16
    uuids = [demo.accept(ANNA, [JOBCENTER], body=f"message {i}") for i in range(n)]
    jobs = demo.store.claim_jobs(2 * n, LEASE)
    inbox = sorted((j for j in jobs if j.kind == "inbox"), key=lambda j: j.message_pk)
    sent = sorted((j for j in jobs if j.kind == "sent"), key=lambda j: j.message_pk)
    start = threading.Barrier(2)

    def file_inbox() -> None:
        start.wait()
        for j in inbox:
            assert demo.store.file(j, j.sha256, None, delivered_event(clock, j)) is not None

    def fail_sent() -> None:
        start.wait()
        for j in sent:
            demo.store.fail_job(j, "disk", None, event(clock, "borger", "delivery.failed",
                                                       message_uuid=j.message_uuid))

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(file_inbox), pool.submit(fail_sent)]:
            f.result()
    assert {demo.store.message(u)["state"] for u in uuids} == {"failed"}
    assert len(demo.store.mailbox_entries(JOBCENTER)) == n

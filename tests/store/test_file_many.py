"""SqlStore.file_many: the delivery worker files a message's INBOX and Sent copies in one unit."""

from __future__ import annotations

from bridge.clock import FixedClock
from tests.store.conftest import ANNA, JOBCENTER, Demo
from tests.store.test_delivery_claims import LEASE, delivered_event, delivered_events


def test_both_jobs_of_a_message_filed_together_deliver_it(demo: Demo, clock: FixedClock) -> None:
    uuid_ = demo.accept(ANNA, [JOBCENTER])
    jobs = demo.store.claim_jobs(10, LEASE)
    filed = demo.store.file_many([(j, j.sha256, None, delivered_event(clock, j)) for j in jobs])
    assert all(f is not None for f in filed)
    assert demo.store.message(uuid_)["state"] == "delivered"
    assert [e["uid"] for e in demo.store.mailbox_entries(JOBCENTER)] == [1]
    assert [e["uid"] for e in demo.store.mailbox_entries(ANNA, "Sent")] == [1]
    assert len(delivered_events(demo.store)) == 2


def test_the_last_job_taken_by_another_worker_still_delivers_the_message(
        demo: Demo, clock: FixedClock) -> None:
    uuid_ = demo.accept(ANNA, [JOBCENTER])
    first = {j.kind: j for j in demo.store.claim_jobs(10, LEASE)}
    clock.advance(LEASE + 1)
    (inbox,) = demo.store.claim_jobs(1, LEASE)          # another worker takes the INBOX job
    assert demo.store.file(inbox, inbox.sha256, None, delivered_event(clock, inbox)) is not None
    assert demo.store.message(uuid_)["state"] == "accepted"
    stale_last = [first["sent"], first["inbox"]]        # the INBOX job, last here, is not ours
    filed = demo.store.file_many([(j, j.sha256, None, delivered_event(clock, j)) for j in stale_last])
    assert filed[0] is not None and filed[1] is None
    assert demo.store.message(uuid_)["state"] == "delivered"
    assert len(delivered_events(demo.store)) == 2

"""The selected mailbox's UIDs as runs (imapserver/uidmap.py), and how SELECT reads them from
the store (MailboxRepository.select_state): from UIDNEXT and the expunge tombstones when they
account for every UID, else from the entries."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select, update

from bridge.imapserver.uidmap import UidMap
from bridge.store import models as m
from bridge.store.mailboxes import MailboxRepository, complement, runs_of
from tests.conftest import ANNA, RunningBridge
from tests.imap.conftest import Opener
from tests.imap.test_idle import deliver, inbox


def test_uidmap_agrees_with_a_plain_list() -> None:
    rng = random.Random(3)
    plain = sorted(rng.sample(range(1, 400), 250))
    uids = UidMap(runs_of(plain))
    for _ in range(200):
        assert len(uids) == len(plain) and list(uids) == plain
        assert uids.last == (plain[-1] if plain else 0)
        if plain:
            lo, hi = sorted(rng.choices(range(1, len(plain) + 1), k=2))
            assert uids.by_seq(lo, hi) == plain[lo - 1:hi]
            assert uids.uid_at(hi) == plain[hi - 1]
        a, b = sorted(rng.choices(range(0, 450), k=2))
        assert uids.between(a, b) == [u for u in plain if a <= u <= b]
        probe = rng.randrange(0, 450)
        assert uids.seq_of(probe) == (plain.index(probe) + 1 if probe in plain else None)
        assert (probe in uids) == (probe in plain)
        if rng.random() < 0.5:
            new = (plain[-1] if plain else 0) + rng.choice((1, 1, 2, 5))
            uids.append(new)
            plain.append(new)
        else:
            doomed = rng.sample(plain, min(len(plain), rng.randrange(0, 4))) + [999]
            uids.remove(doomed)
            plain = [u for u in plain if u not in doomed]


def test_runs_and_complement() -> None:
    assert runs_of([1, 2, 3, 5, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert runs_of([]) == []
    assert complement([1, 4, 5, 9], 1, 9) == [(2, 3), (6, 8)]
    assert complement([], 1, 0) == []
    assert UidMap([(1, 100_000)]).seq_of(99_999) == 99_999     # one run, whatever the size


def test_select_reads_uids_from_tombstones_or_entries(bridge: RunningBridge, transcript: Opener) -> None:
    deliver(bridge, 5)
    t = transcript(bridge, ANNA)
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "UID STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    t.transact("OK", "EXPUNGE")
    repo = MailboxRepository(bridge.store)
    box = inbox(bridge)
    view, runs, keywords = repo.select_state(box)
    assert (view.uidnext, runs, keywords) == (6, [(1, 1), (3, 3), (5, 5)], [])
    # An entry whose UID left no tombstone (the counts do not add up): the entries are read.
    with bridge.store.tx() as s:
        s.execute(update(m.Mailbox).where(m.Mailbox.id == box).values(uidnext=8))
        row = s.scalars(select(m.MailboxEntry).where(m.MailboxEntry.mailbox_id == box,
                                                     m.MailboxEntry.uid == 5)).one()
        s.add(m.MailboxEntry(mailbox_id=box, uid=7, message_id=row.message_id, sha256=row.sha256,
                             flags="", keywords="$Later", modseq=row.modseq,
                             internal_date=dt.datetime.now(dt.timezone.utc)))
    view, runs, keywords = repo.select_state(box)
    assert (view.uidnext, runs, keywords) == (8, [(1, 1), (3, 3), (5, 5), (7, 7)], ["$Later"])
    t = transcript(bridge, ANNA)
    lines = t.transact("OK", "SELECT INBOX")
    assert b"* 4 EXISTS" in lines and b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)" in lines
    assert t.transact("OK", "FETCH 4 (UID)")[0] == b"* 4 FETCH (UID 7)"

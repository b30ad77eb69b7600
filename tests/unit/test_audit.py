"""The audit hash chain: canonical form, link hashes and re-walking a chain (no I/O)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

from bridge.core.audit import GENESIS, AuditEvent, event_from_row, link_hash, verify_chain

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def make_event(i: int, **kw: object) -> AuditEvent:
    base: dict = dict(time=T0 + dt.timedelta(seconds=i), chain="kommune", kind="login", result="ok",
                      actor=f"user{i}@kommune.dp2.test", protocol="smtp", session_id=f"s{i}",
                      details={"ip": "192.0.2.1", "n": i, "ø": "æå"})
    base.update(kw)
    return AuditEvent(**base)


def make_rows(n: int) -> list[dict]:
    """Rows as the store returns them: the event's fields plus seq, prev_hash, hash (naive UTC time)."""
    rows, prev = [], GENESIS
    for i in range(1, n + 1):
        ev = make_event(i)
        h = link_hash(prev, ev)
        row = {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}
        row.update(id=i, seq=i, prev_hash=prev, hash=h, time=ev.time.replace(tzinfo=None))
        rows.append(row)
        prev = h
    return rows


def test_canonical_form_is_sorted_compact_utc_json() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    ev = make_event(0, time=T0.astimezone(cet))
    doc = json.loads(ev.canonical())
    assert doc["time"] == "2026-01-02T03:04:05.123456+00:00"
    assert ev.canonical() == json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode()
    assert "æå".encode() in ev.canonical()


def test_canonical_form_does_not_depend_on_details_order() -> None:
    a = make_event(1, details={"a": 1, "b": 2})
    b = make_event(1, details={"b": 2, "a": 1})
    assert a.canonical() == b.canonical()


def test_link_hash_is_sha256_of_prev_hash_and_canonical_json() -> None:
    ev = make_event(1)
    assert link_hash(GENESIS, ev) == hashlib.sha256(GENESIS.encode() + ev.canonical()).hexdigest()
    assert link_hash("1" * 64, ev) != link_hash(GENESIS, ev)


def test_event_from_row_restores_the_event_with_utc_time() -> None:
    row = make_rows(1)[0]
    assert event_from_row(row) == make_event(1)


def test_intact_chain_verifies() -> None:
    rows = make_rows(5)
    assert verify_chain(rows) is None
    assert verify_chain(rows, head=(5, rows[-1]["hash"])) is None
    assert verify_chain([]) is None
    assert verify_chain([], head=(0, GENESIS)) is None


def test_changed_details_are_found_at_their_seq() -> None:
    rows = make_rows(5)
    rows[2]["details"] = {**rows[2]["details"], "ip": "203.0.113.9"}
    assert verify_chain(rows) == 3


def test_changed_fixed_fields_are_found() -> None:
    for name, value in (("actor", "mallory@x"), ("result", "fail"), ("kind", "logout"),
                        ("time", make_rows(1)[0]["time"] + dt.timedelta(microseconds=1)),
                        ("message_uuid", "00000000-0000-4000-8000-000000000000")):
        rows = make_rows(4)
        rows[1][name] = value
        assert verify_chain(rows) == 2, name


def test_rehashed_row_breaks_the_next_link() -> None:
    rows = make_rows(4)
    rows[1]["actor"] = "mallory@x"
    rows[1]["hash"] = link_hash(rows[1]["prev_hash"], event_from_row(rows[1]))
    assert verify_chain(rows) == 3


def test_deleted_row_is_a_gap() -> None:
    rows = make_rows(5)
    del rows[1]
    assert verify_chain(rows) == 2


def test_reordered_rows_are_found() -> None:
    rows = make_rows(4)
    rows[1], rows[2] = rows[2], rows[1]
    assert verify_chain(rows) == 2


def test_first_row_must_follow_genesis() -> None:
    rows = make_rows(3)[1:]
    assert verify_chain(rows) == 1


def test_row_of_another_chain_is_found() -> None:
    rows = make_rows(3)
    rows[2]["chain"] = "advokat"
    assert verify_chain(rows) == 3


def test_cut_off_tail_is_found_only_with_the_head() -> None:
    rows = make_rows(5)
    head = (5, rows[-1]["hash"])
    assert verify_chain(rows[:3]) is None
    assert verify_chain(rows[:3], head=head) == 4


def test_head_disagreeing_with_the_rows_is_found() -> None:
    rows = make_rows(3)
    assert verify_chain(rows, head=(3, "f" * 64)) == 3
    assert verify_chain(rows, head=(2, rows[1]["hash"])) == 3

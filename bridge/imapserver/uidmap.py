"""The UIDs of a selected mailbox as the session's client knows them, kept as runs.

Sequence number n is the n-th UID of the map (RFC 9051 section 2.3.1.2).  A
mailbox's UIDs are mostly consecutive (delivery takes the next UID, and only
expunges leave holes), so the map holds runs of consecutive UIDs in three
arrays of 8-byte integers: a 100,000-message mailbox without holes costs 24
bytes, not a list of 100,000 Python ints, and idle sessions stay small.  Lookups
are binary searches over the runs.  The runs come from the store
(MailboxRepository.select_state); knows nothing of the protocol.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Iterable, Iterator

from bridge.store.mailboxes import complement, runs_of


class UidMap:
    __slots__ = ("_starts", "_ends", "_before")

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        """`runs`: (first UID, last UID) pairs, ascending and not touching each other."""
        self._load(runs)

    def _load(self, runs: Iterable[tuple[int, int]]) -> None:
        self._starts, self._ends, self._before = array("q"), array("q"), array("q")
        total = 0
        for first, last in runs:
            self._starts.append(first)
            self._ends.append(last)
            self._before.append(total)
            total += last - first + 1

    @classmethod
    def of(cls, uids: Iterable[int]) -> "UidMap":
        """The map of ascending UIDs."""
        return cls(runs_of(uids))

    def __len__(self) -> int:
        if not self._starts:
            return 0
        return self._before[-1] + self._ends[-1] - self._starts[-1] + 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self._run_of(uid) >= 0

    def __iter__(self) -> Iterator[int]:
        for first, last in zip(self._starts, self._ends):
            yield from range(first, last + 1)

    @property
    def last(self) -> int:
        """The largest UID, 0 when empty."""
        return self._ends[-1] if self._ends else 0

    def runs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    def _run_of(self, uid: int) -> int:
        i = bisect_right(self._starts, uid) - 1
        return i if i >= 0 and uid <= self._ends[i] else -1

    def seq_of(self, uid: int) -> int | None:
        """The sequence number of `uid`, None if it is not in the map."""
        i = self._run_of(uid)
        return None if i < 0 else self._before[i] + uid - self._starts[i] + 1

    def uid_at(self, seq: int) -> int:
        """The UID of sequence number `seq` (1 <= seq <= len)."""
        i = bisect_right(self._before, seq - 1) - 1
        return self._starts[i] + seq - 1 - self._before[i]

    def by_seq(self, lo: int, hi: int) -> list[int]:
        """The UIDs of sequence numbers lo..hi (1 <= lo <= hi <= len), ascending."""
        return self.between(self.uid_at(lo), self.uid_at(hi))

    def between(self, lo: int, hi: int) -> list[int]:
        """The UIDs of the map from lo to hi inclusive, ascending."""
        out: list[int] = []
        if lo > hi:
            return out
        i = max(bisect_right(self._starts, lo) - 1, 0)
        for first, last in zip(self._starts[i:], self._ends[i:]):
            if first > hi:
                break
            a, b = max(first, lo), min(last, hi)
            if a <= b:
                out.extend(range(a, b + 1))
        return out

    def append(self, uid: int) -> None:
        """Add a UID above every UID in the map (a new message)."""
        if self._ends and uid <= self._ends[-1]:
            raise ValueError("UIDs are added in ascending order")
        if self._ends and uid == self._ends[-1] + 1:
            self._ends[-1] = uid
            return
        self._before.append(len(self))
        self._starts.append(uid)
        self._ends.append(uid)

    def remove(self, uids: Iterable[int]) -> None:
        """Take UIDs out of the map (expunged); UIDs not in it are ignored."""
        doomed = sorted(set(uids))
        if doomed:
            self._load(_without(self.runs(), doomed))


def _without(runs: list[tuple[int, int]], doomed: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    j = 0
    for first, last in runs:
        while j < len(doomed) and doomed[j] < first:
            j += 1
        k = j
        while k < len(doomed) and doomed[k] <= last:
            k += 1
        out += complement(doomed[j:k], first, last)
        j = k
    return out


__all__ = ["UidMap"]

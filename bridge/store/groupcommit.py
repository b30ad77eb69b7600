"""Group commit: concurrent write units share one transaction and one fsync.

A commit on SQLite (WAL, synchronous=FULL) or PostgreSQL waits for the disk,
about 4 ms on this project's machines, and SQLite admits one writer at a
time: one commit per message caps submission at ~200 messages/s however many
clients there are (DESIGN.md section 10).  `GroupCommitter.run(unit)` hands a
unit of work (a function of a Session) to one committer thread, which runs
every unit waiting at that moment in ONE transaction and commits once; each
caller's `run` returns only after that commit, so "committed before the reply"
still holds for every caller.  If the shared transaction fails, each unit is
retried alone so that only the faulty one sees its error.  Between units the
session is flushed and emptied of ORM objects, so units written with Core
statements and units using the ORM can share a transaction safely.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Callable, TypeVar

from sqlalchemy.orm import Session

log = logging.getLogger("bridge.store")
T = TypeVar("T")
Unit = Callable[[Session], Any]


class GroupCommitter:
    def __init__(self, transaction: Callable[[], AbstractContextManager[Session]],
                 max_batch: int = 256) -> None:
        self._transaction = transaction
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Unit, Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="bridge-commit", daemon=True)
        self._closed = False
        self._thread.start()

    def run(self, unit: Callable[[Session], T]) -> T:
        """Run `unit` in a shared transaction; return its result once that is committed.
        Raises what the unit raised (run alone), or RuntimeError after close()."""
        if self._closed:
            raise RuntimeError("the store is closed")
        future: Future[T] = Future()
        self._queue.put((unit, future))
        return future.result()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(30)

    def _loop(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                self._commit(batch)
            if stop:
                return

    def _take(self) -> tuple[list[tuple[Unit, Future[Any]]], bool]:
        item = self._queue.get()
        if item is None:
            return [], True
        batch = [item]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit(self, batch: list[tuple[Unit, Future[Any]]]) -> None:
        try:
            with self._transaction() as session:
                results = [self._run_unit(session, unit) for unit, _ in batch]
        except BaseException as exc:  # noqa: B036 - every waiter must be answered
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.debug("shared commit of %d units failed (%s); retrying each alone", len(batch), exc)
            for item in batch:
                self._commit([item])
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)

    @staticmethod
    def _run_unit(session: Session, unit: Unit) -> Any:
        """Run one unit; then flush what it left in the session and forget its ORM objects.
        Units may write with Core statements (which neither flush nor refresh the identity
        map), so no unit may see another's pending changes or stale objects: each starts
        as if in a session of its own (that shares the transaction)."""
        result = unit(session)
        session.flush()
        if session.identity_map:
            session.expunge_all()
        return result

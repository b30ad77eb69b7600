"""GroupCommitter: many callers, few commits, and a faulty unit fails alone."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, event, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.store.groupcommit import GroupCommitter

META = MetaData()
ROWS = Table("rows", META, Column("id", Integer, primary_key=True), Column("n", Integer, unique=True))


@pytest.fixture
def committer(tmp_path: Path) -> Iterator[tuple[GroupCommitter, sessionmaker, list[int]]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    META.create_all(engine)
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    make = sessionmaker(engine)

    @contextmanager
    def tx() -> Iterator[Session]:
        with make() as s, s.begin():
            yield s
    gc = GroupCommitter(tx)
    try:
        yield gc, make, commits
    finally:
        gc.close()
        engine.dispose()


def insert_unit(n: int):
    def unit(s: Session) -> int:
        s.execute(insert(ROWS).values(n=n))
        return n
    return unit


def test_concurrent_units_share_commits(committer) -> None:
    gc, make, commits = committer
    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(gc.run(insert_unit(i)))) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(200))
    with make() as s:
        assert s.scalar(select(func.count()).select_from(ROWS)) == 200
    assert len(commits) < 200          # at least some units shared a commit


def test_a_failing_unit_fails_alone(committer) -> None:
    gc, make, _ = committer
    gc.run(insert_unit(1))
    outcomes: dict[int, object] = {}

    def submit(n: int) -> None:
        try:
            outcomes[n] = gc.run(insert_unit(n))
        except Exception as exc:       # the duplicate n=1 violates the unique constraint
            outcomes[n] = exc
    threads = [threading.Thread(target=submit, args=(n,)) for n in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(outcomes[1], Exception)
    assert [outcomes[n] for n in (2, 3, 4)] == [2, 3, 4]
    with make() as s:
        assert sorted(s.scalars(select(ROWS.c.n))) == [1, 2, 3, 4]


def test_run_after_close_is_refused(committer) -> None:
    gc, _, _ = committer
    gc.close()
    with pytest.raises(RuntimeError):
        gc.run(insert_unit(9))

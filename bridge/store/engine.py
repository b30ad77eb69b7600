"""Engines, transactions and the cursor the hot statements run on: the base of `SqlStore`.

Write transactions on SQLite start with BEGIN IMMEDIATE so two writers never
deadlock on a lock upgrade; reads use a separate engine with deferred BEGIN.
`StoreBase._shared` runs a unit of work in a transaction shared with concurrent
callers (group commit, groupcommit.py); `_run`/`_run_many` execute the prepared
hot statements (prepared.py) on the DBAPI cursor of a session's transaction.
The store's parts (auditchain.py, directory.py, identities.py, submissions.py,
delivery.py) build on this class; sql.py composes them into `SqlStore`.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bridge.clock import Clock
from bridge.errors import StorageUnavailable
from bridge.store.groupcommit import GroupCommitter
from bridge.store.prepared import HotStatements, Prepared

T = TypeVar("T")

# Session.info keys, valid for one transaction (StoreBase drops them when it ends):
HEADS = "bridge.audit_heads"        # {chain: [seq, hash]} of heads locked in this transaction
CURSOR = "bridge.cursor"            # the DBAPI cursor of the transaction's connection


def make_engine(url: str, *, immediate: bool) -> Engine:
    if url.startswith("sqlite"):
        # LIFO: a thread that runs transaction after transaction (the group committer) gets
        # its connection back, whose page cache is still valid; SQLite drops a connection's
        # cache when another connection has written since, so a FIFO pool re-reads pages.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=8, max_overflow=8, pool_use_lifo=True)
        _sqlite_setup(engine, immediate)
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_setup(engine: Engine, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None          # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")      # a commit is on disk before COMMIT returns
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # On the DBAPI connection: SQLAlchemy's statement execution would cost more CPU than
        # the BEGIN itself, for every transaction.
        try:
            conn.connection.dbapi_connection.execute(begin)
        except sqlite3.Error as exc:        # e.g. "database is locked" after busy_timeout
            raise DBAPIError.instance(begin, (), exc, sqlite3.Error) from exc


class StoreBase:
    """Engines, sessions, transactions and the hot-statement cursor of a `SqlStore`."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self.is_sqlite = url.startswith("sqlite")
        self.write_engine = make_engine(url, immediate=True)
        self.read_engine = make_engine(url, immediate=False) if self.is_sqlite else self.write_engine
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._hot: HotStatements | None = None
        self._dbapi_error = self.write_engine.dialect.loaded_dbapi.Error
        # What a transaction keeps in Session.info ends with it; a savepoint rolled back may
        # also have taken audit rows with it, so the cached heads go then too.
        event.listen(self._write, "after_commit", _forget_transaction)
        event.listen(self._write, "after_soft_rollback", lambda session, _previous: _forget_transaction(session))
        self._committer: GroupCommitter | None = None
        self._cache: dict[Any, tuple[float, Any]] = {}
        self._committer_lock = threading.Lock()

    def _shared(self, unit: Callable[[Session], T]) -> T:
        """Run `unit` in a transaction shared with concurrent callers (group commit)."""
        with self._committer_lock:
            if self._committer is None:
                self._committer = GroupCommitter(self.tx)
        return self._committer.run(unit)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    def migrate(self) -> None:
        """Bring the database schema to the newest migration (idempotent)."""
        from bridge.store import migrate
        migrate.upgrade(self.write_engine)

    def check_schema(self) -> None:
        """Raise StorageUnavailable unless the database is at the newest migration."""
        from bridge.store import migrate
        have, want = migrate.current(self.read_engine), migrate.head()
        if have != want:
            raise StorageUnavailable(
                f"database schema is at {have or 'nothing'}, this version needs {want}",
                public=f"the database is not initialised or not upgraded (schema {have or 'none'}, "
                       f"need {want}); run `dp2bridge init` for a new home or `dp2bridge upgrade`")

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def ro(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @property
    def _q(self) -> HotStatements:
        """The hot statements, compiled on first use (the dialect knows its server by then)."""
        hot = self._hot
        if hot is None:
            hot = self._hot = HotStatements(self.write_engine.dialect, self.is_sqlite)
        return hot

    def _cursor(self, s: Session) -> Any:
        """The DBAPI cursor of the session's transaction (begun here if it was not yet).
        Statements run on it do not flush the session: callers flush first where the ORM
        may hold changes their statements depend on."""
        cur = s.info.get(CURSOR)
        if cur is None:
            cur = s.info[CURSOR] = s.connection().connection.cursor()
        return cur

    def _run(self, s: Session, q: Prepared, values: dict[str, Any]) -> Any:
        """Execute `q` with `values` in the session's transaction; returns the cursor."""
        cur = self._cursor(s)
        sql, args = q.sql, q.args(values)
        if self._cursor_events:
            sql, args = self._before_cursor_execute(s, cur, sql, args, False)
        try:
            cur.execute(sql, args)
        except self._dbapi_error as exc:      # the exception SQLAlchemy would have raised
            raise DBAPIError.instance(sql, args, exc, self._dbapi_error) from exc
        return cur

    def _run_many(self, s: Session, q: Prepared, rows: list[dict[str, Any]]) -> None:
        cur = self._cursor(s)
        sql, args = q.sql, [q.args(r) for r in rows]
        if self._cursor_events:
            sql, args = self._before_cursor_execute(s, cur, sql, args, True)
        try:
            cur.executemany(sql, args)
        except self._dbapi_error as exc:
            raise DBAPIError.instance(sql, args, exc, self._dbapi_error) from exc

    @property
    def _cursor_events(self) -> bool:
        return bool(self.write_engine.dispatch.before_cursor_execute)

    def _before_cursor_execute(self, s: Session, cur: Any, sql: str, args: Any, many: bool) -> tuple[str, Any]:
        """The engine's before_cursor_execute listeners (tests, tracing) see these statements
        too, as SQLAlchemy would call them (without an execution context)."""
        conn = s.connection()
        for listener in self.write_engine.dispatch.before_cursor_execute:
            sql, args = listener(conn, cur, sql, args, None, many)
        return sql, args

    def _content(self, s: Session, sha256: str, info: Any) -> None:
        """The content row for a blob, unless it exists (the same bytes filed twice, or by
        another node at the same moment): INSERT ... ON CONFLICT DO NOTHING.  Shared by
        acceptance (submissions.py), filing (delivery.py) and receipts (receipts.py)."""
        if info is None:
            return
        self._run(s, self._q.insert_content, {
            "sha256": sha256, "size": info.size, "header_size": info.header_size,
            "subject": info.subject, "envelope": info.envelope, "body": info.body,
            "created_at": self.clock.now()})


def _forget_transaction(session: Session) -> None:
    """Drop what `StoreBase` kept for the transaction that ended (or its savepoint)."""
    session.info.pop(HEADS, None)
    cur = session.info.pop(CURSOR, None)
    if cur is not None:
        cur.close()


def row_dict(obj: Any) -> dict:
    """An ORM object's columns as a plain dict (what admin listings and tests read)."""
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}

"""The SQL store: one implementation for SQLite (embedded default) and PostgreSQL.

Owns engines, transactions and every query.  Returns core value objects (or
plain dicts for admin listings); never returns ORM objects to callers.
Write transactions on SQLite start with BEGIN IMMEDIATE so two writers never
deadlock on a lock upgrade; reads use a separate engine with deferred BEGIN.
PostgreSQL claims delivery jobs with FOR UPDATE SKIP LOCKED so several nodes
can share one database (DESIGN.md section 11).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
import secrets
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from sqlalchemy import (Engine, bindparam, create_engine, event, exists, func, insert, literal, or_,
                        select, update)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from bridge.clock import Clock
from bridge.core.audit import GENESIS, AuditEvent, link_hash
from bridge.core.identities import Address, AddressKind, Principal, Target
from bridge.core.messages import Filed, Job, Submission
from bridge.errors import AlreadyExists, NotFound, StorageUnavailable
from bridge.store import models as m
from bridge.store.groupcommit import GroupCommitter

if TYPE_CHECKING:
    from bridge.store.receipts import AuditRef

T = TypeVar("T")

CACHE_SECONDS = 2.0
STANDARD_MAILBOXES = (("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                      ("Trash", "\\Trash"), ("Archive", "\\Archive"), ("Receipts", None))

# --- statements of the hot paths, built once -------------------------------------
# Submission and delivery run the statements below for every message.  Going through
# SQLAlchemy's execution (context, parameter handling, result objects) costs 50-150 us of
# CPU per statement here, several times the work SQLite itself does for a one-row statement.
# So each is compiled ONCE per engine with SQLAlchemy (same SQL, same bind processors, so
# the stored values are exactly what the ORM would store: UTCDateTime, JSON) and run on
# the DBAPI cursor of the session's transaction (`_Prepared`, `SqlStore._run`).  Statements
# that run once per batch of jobs or per login stay ordinary Core statements.

_T = m.Tenant.__table__
_PARTY = m.Party.__table__
_ACCT = m.Account.__table__
_APW = m.AppPassword.__table__
_CP = m.ContactPoint.__table__
_GRANT = m.Grant.__table__
_BOX = m.Mailbox.__table__
_CONTENT = m.Content.__table__
_MSG = m.Message.__table__
_ENTRY = m.MailboxEntry.__table__
_JOB = m.DeliveryJob.__table__
_EVENT = m.AuditEvent.__table__
_HEAD = m.AuditHead.__table__

_NOW = bindparam("now", type_=m.UTCDateTime())

_THREAD_OF = select(_MSG.c.thread_id).where(
    _MSG.c.message_id.in_(bindparam("ids", expanding=True))).order_by(_MSG.c.id).limit(1)

_CLAIMABLE = select(_JOB.c.id).where(
    ((_JOB.c.state == "queued") & (_JOB.c.next_attempt_at <= _NOW))
    | ((_JOB.c.state == "running") & (_JOB.c.lease_until < _NOW))
).order_by(_JOB.c.id).limit(bindparam("limit"))


def _claim(claimable: Any) -> Any:
    """Lease the first `limit` claimable jobs to `token`, in one statement."""
    return update(_JOB).where(_JOB.c.id.in_(claimable)).values(
        state="running", lease_token=bindparam("token"),
        lease_until=bindparam("until", type_=m.UTCDateTime()), attempts=_JOB.c.attempts + 1)


def _job_view_query() -> Any:
    """Everything a claimed job's Job needs, for the whole batch in one SELECT."""
    st, ot = _T.alias("st"), _T.alias("ot")
    sender, owner_a, owner_cp = _ACCT.alias("sender"), _ACCT.alias("owner_a"), _CP.alias("owner_cp")
    owner_tenant = func.coalesce(owner_a.c.tenant_id, owner_cp.c.tenant_id)
    return select(
        _JOB.c.id, _JOB.c.kind, _JOB.c.recipient, _JOB.c.lease_token, _JOB.c.attempts, _JOB.c.account_id,
        _MSG.c.id, _MSG.c.uuid, _MSG.c.sha256, _MSG.c.from_address, st.c.name, st.c.kind,
        sender.c.login, _PARTY.c.kind, _PARTY.c.identifier,
        owner_a.c.id, owner_a.c.login, owner_cp.c.id, owner_cp.c.address, ot.c.name, ot.c.kind,
        owner_a.c.disabled, _MSG.c.auth, _MSG.c.memo,
    ).select_from(
        _JOB.join(_MSG, _MSG.c.id == _JOB.c.message_id).join(st, st.c.id == _MSG.c.tenant_id)
        .outerjoin(sender, sender.c.id == _MSG.c.sender_account_id)
        .outerjoin(_PARTY, _PARTY.c.id == _MSG.c.sender_party_id)
        .outerjoin(owner_a, owner_a.c.id == _JOB.c.account_id)
        .outerjoin(owner_cp, owner_cp.c.id == _JOB.c.contact_point_id)
        .join(ot, ot.c.id == owner_tenant)
    ).where(  # the jobs just leased to this token (the state is indexed: few rows are running)
        _JOB.c.state == "running", _JOB.c.lease_token == bindparam("token")).order_by(_JOB.c.id)


_JOB_VIEW = _job_view_query()

_CREDENTIALS = select(_ACCT.c.id, _ACCT.c.password_hash, _ACCT.c.disabled, _T.c.name, _T.c.disabled) \
    .join(_T, _T.c.id == _ACCT.c.tenant_id).where(_ACCT.c.login == bindparam("login"))
_APP_PASSWORDS = select(_APW.c.id, _APW.c.password_hash).where(
    _APW.c.account_id == bindparam("account_id"), _APW.c.revoked_at.is_(None)).order_by(_APW.c.id)
_PRINCIPAL = select(_ACCT.c.id, _ACCT.c.login, _ACCT.c.display_name, _ACCT.c.role, _T.c.id, _T.c.name,
                    _T.c.kind, _T.c.policy, _PARTY.c.id, _PARTY.c.kind, _PARTY.c.identifier) \
    .join(_T, _T.c.id == _ACCT.c.tenant_id).join(_PARTY, _PARTY.c.id == _ACCT.c.party_id) \
    .where(_ACCT.c.id == bindparam("account_id"))
_GRANTED = select(_CP.c.address).join(_GRANT, _GRANT.c.contact_point_id == _CP.c.id).where(
    _GRANT.c.account_id == bindparam("account_id"))

_REQUIRED = object()


class _Prepared:
    """A statement compiled once for one dialect, to run on a DBAPI cursor: `sql` and the
    parameters for it from a dict of values (`args`).  Parameters are converted by the bind
    processors SQLAlchemy would use (the column types' own); constants in the statement
    (e.g. `state == "running"`) are filled in.  No expanding (IN list) parameters."""

    __slots__ = ("sql", "_plan", "_names")

    def __init__(self, stmt: Any, dialect: Any, column_keys: tuple[str, ...] | None = None,
                 returning: bool = False) -> None:
        # An INSERT is compiled "for executemany" unless it asks for RETURNING: PostgreSQL's
        # then does not add an implicit RETURNING of the new id that nobody reads.
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None,
                                for_executemany=bool(column_keys) and not returning)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError(f"{stmt}: expanding parameters need SQLAlchemy's execution")
        binds: dict[str, tuple[Any, Any]] = {}
        for bind, name in compiled.bind_names.items():
            if bind.callable is not None:
                raise ValueError(f"{stmt}: parameter {name} has a Python-side default")
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                binds[name] = (bind.key, process)
            else:
                const = process(bind.value) if process else bind.value
                binds[name] = (_REQUIRED, const)
        if column_keys and (not set(column_keys) <= set(binds) or
                            {n for n in binds if n in stmt.table.c} - set(column_keys)):
            # e.g. a column left out, which SQLAlchemy would fill with its default
            raise ValueError(f"{stmt}: the inserted columns are not exactly those given")
        self.sql = compiled.string
        names = list(compiled.positiontup) if dialect.positional else list(binds)
        self._plan = tuple(binds[n] for n in names)
        self._names = None if dialect.positional else tuple(names)

    def args(self, values: dict[str, Any]) -> Any:
        out = []
        for key, process in self._plan:
            if key is _REQUIRED:
                out.append(process)                  # a constant, converted already
            else:
                value = values[key]
                out.append(process(value) if process is not None else value)
        return out if self._names is None else dict(zip(self._names, out))


_MESSAGE_COLUMNS = ("uuid", "tenant_id", "message_id", "thread_id", "in_reply_to", "sender_account_id",
                    "sender_party_id", "from_address", "subject", "sha256", "size", "internal_date",
                    "origin", "session_id", "state", "memo", "auth")
_JOB_COLUMNS = ("message_id", "kind", "recipient", "account_id", "contact_point_id", "state", "attempts",
                "next_attempt_at", "created_at")
_ENTRY_COLUMNS = ("mailbox_id", "uid", "message_id", "sha256", "flags", "keywords", "modseq",
                  "internal_date")
_EVENT_COLUMNS = ("chain", "seq", "time", "kind", "message_uuid", "actor", "subject", "protocol",
                  "session_id", "result", "details", "prev_hash", "hash")
_CONTENT_COLUMNS = ("sha256", "size", "header_size", "subject", "envelope", "body", "created_at")
_HEAD_COLUMNS = ("chain", "seq", "hash")


class _Hot:
    """The hot statements, compiled for one engine's dialect."""

    def __init__(self, dialect: Any, sqlite: bool) -> None:
        ins = sqlite_insert if sqlite else pg_insert
        self.sqlite = sqlite
        self.duplicate = _Prepared(select(_MSG.c.uuid).where(
            _MSG.c.sender_account_id == bindparam("sender"), _MSG.c.message_id == bindparam("mid"),
            _MSG.c.internal_date >= bindparam("since", type_=m.UTCDateTime()),
            _MSG.c.origin != "imap-append")          # a client's own APPENDed copy is no submission
            .order_by(_MSG.c.id).limit(1), dialect)
        # SQLite: the new id is the cursor's lastrowid; PostgreSQL returns it.
        self.insert_message = _Prepared(
            insert(_MSG) if sqlite else insert(_MSG).returning(_MSG.c.id), dialect, _MESSAGE_COLUMNS,
            returning=not sqlite)
        self.insert_jobs = _Prepared(insert(_JOB), dialect, _JOB_COLUMNS)
        self.insert_content = _Prepared(
            ins(_CONTENT).on_conflict_do_nothing(index_elements=["sha256"]), dialect, _CONTENT_COLUMNS)
        self.insert_entry = _Prepared(insert(_ENTRY), dialect, _ENTRY_COLUMNS)
        self.insert_event = _Prepared(insert(_EVENT), dialect, _EVENT_COLUMNS)
        self.update_head = _Prepared(update(_HEAD).where(_HEAD.c.chain == bindparam("head_chain")).values(
            seq=bindparam("new_seq"), hash=bindparam("new_hash")), dialect)
        self.lock_head = _Prepared(select(_HEAD.c.seq, _HEAD.c.hash).where(
            _HEAD.c.chain == bindparam("head_chain")).with_for_update(), dialect)
        self.new_head = _Prepared(ins(_HEAD).on_conflict_do_nothing(index_elements=["chain"]),
                                  dialect, _HEAD_COLUMNS)
        self.finish_job = _Prepared(update(_JOB).where(
            _JOB.c.id == bindparam("job_id"), _JOB.c.state == "running",
            _JOB.c.lease_token == bindparam("token")).values(state="done", done_at=_NOW, lease_until=None),
            dialect)
        # The next UID and MODSEQ of a mailbox, its row locked FOR UPDATE until commit.
        # SQLite: read, then write.  PostgreSQL: one statement, (id, uid, modseq) - the lock is
        # taken in the WITH, and the UPDATE works on the newest version of the locked row.
        self.lock_box: dict[str, _Prepared] = {}
        for owner in ("account_id", "contact_point_id"):
            locked = select(_BOX.c.id, _BOX.c.uidnext, _BOX.c.highestmodseq).where(
                _BOX.c[owner] == bindparam("owner"), _BOX.c.name == bindparam("box_name")).with_for_update()
            if not sqlite:
                box = locked.with_only_columns(_BOX.c.id).cte("box")
                locked = update(_BOX).where(_BOX.c.id == box.c.id).values(
                    uidnext=_BOX.c.uidnext + 1, highestmodseq=_BOX.c.highestmodseq + 1,
                ).returning(_BOX.c.id, _BOX.c.uidnext - 1, _BOX.c.highestmodseq)
            self.lock_box[owner] = _Prepared(locked, dialect)
        self.set_box = _Prepared(update(_BOX).where(_BOX.c.id == bindparam("box_id")).values(
            uidnext=bindparam("new_uidnext"), highestmodseq=bindparam("new_modseq")), dialect)
        self.lock_message = _Prepared(
            select(_MSG.c.id).where(_MSG.c.id == bindparam("message_pk")).with_for_update(), dialect)
        self.mark_delivered = _Prepared(update(_MSG).where(
            _MSG.c.id == bindparam("message_pk"), _MSG.c.state == "accepted",
            ~exists(select(literal(1)).select_from(_JOB).where(
                _JOB.c.message_id == bindparam("message_pk"),
                or_(_JOB.c.state == "queued", _JOB.c.state == "running")))
        ).values(state="delivered"), dialect)
        # Several nodes on PostgreSQL: a job another claimer has locked is skipped, not waited for.
        self.claim = _Prepared(_claim(_CLAIMABLE if sqlite else _CLAIMABLE.with_for_update(skip_locked=True)),
                               dialect)
        self.claimed = _Prepared(_JOB_VIEW, dialect)


# Session.info keys, valid for one transaction (SqlStore drops them when it ends):
_HEADS = "bridge.audit_heads"       # {chain: [seq, hash]} of heads locked in this transaction
_CURSOR = "bridge.cursor"           # the DBAPI cursor of the transaction's connection


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


class SqlStore:
    """See `bridge.store.repository.Store`."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self.is_sqlite = url.startswith("sqlite")
        self.write_engine = make_engine(url, immediate=True)
        self.read_engine = make_engine(url, immediate=False) if self.is_sqlite else self.write_engine
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._hot: _Hot | None = None
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
    def _q(self) -> _Hot:
        """The hot statements, compiled on first use (the dialect knows its server by then)."""
        hot = self._hot
        if hot is None:
            hot = self._hot = _Hot(self.write_engine.dialect, self.is_sqlite)
        return hot

    def _cursor(self, s: Session) -> Any:
        """The DBAPI cursor of the session's transaction (begun here if it was not yet).
        Statements run on it do not flush the session: callers flush first where the ORM
        may hold changes their statements depend on."""
        cur = s.info.get(_CURSOR)
        if cur is None:
            cur = s.info[_CURSOR] = s.connection().connection.cursor()
        return cur

    def _run(self, s: Session, q: _Prepared, values: dict[str, Any]) -> Any:
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

    def _run_many(self, s: Session, q: _Prepared, rows: list[dict[str, Any]]) -> None:
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

    # --- audit -------------------------------------------------------------------

    def _audit(self, s: Session, ev: AuditEvent) -> str:
        """Append `ev` to its chain in the caller's transaction.  The chain's head row is
        locked until commit, so concurrent appenders (threads or nodes) queue up behind it
        and every chain stays linear.  Call it last in a transaction (lock order:
        delivery job, content, mailbox, message, audit head).  A head locked once in a
        transaction stays locked until it ends, so it is read once per transaction (kept
        in `s.info`) however many events a shared commit appends to that chain."""
        heads = s.info.get(_HEADS)
        if heads is None:
            heads = s.info[_HEADS] = {}
        head = heads.get(ev.chain)
        if head is None:
            head = heads[ev.chain] = self._audit_head(s, ev.chain)
        seq, prev = head[0] + 1, head[1]
        digest = link_hash(prev, ev)
        q = self._q
        self._run(s, q.insert_event, {
            "chain": ev.chain, "seq": seq, "time": ev.time, "kind": ev.kind,
            "message_uuid": ev.message_uuid, "actor": ev.actor, "subject": ev.subject,
            "protocol": ev.protocol, "session_id": ev.session_id, "result": ev.result,
            "details": ev.details, "prev_hash": prev, "hash": digest})
        self._run(s, q.update_head, {"head_chain": ev.chain, "new_seq": seq, "new_hash": digest})
        head[0], head[1] = seq, digest
        return digest

    def _audit_ref(self, s: Session, ev: AuditEvent) -> "AuditRef":
        """`_audit`, returning where the event sits in its chain (for a receipt's evidence)."""
        from bridge.store.receipts import AuditRef
        digest = self._audit(s, ev)
        return AuditRef(ev.chain, s.info[_HEADS][ev.chain][0], digest, ev.time)

    def _audit_head(self, s: Session, chain: str) -> list[Any]:
        """[seq, hash] of the chain's head, its row locked until the transaction ends."""
        q = self._q
        row = self._run(s, q.lock_head, {"head_chain": chain}).fetchone()
        if row is None:
            # A new chain; another transaction may be creating it at this moment: then the
            # insert waits for it and does nothing, and the row is locked below.
            self._run(s, q.new_head, {"chain": chain, "seq": 0, "hash": GENESIS})
            row = self._run(s, q.lock_head, {"head_chain": chain}).fetchone()
        return [row[0], row[1]]

    def append_audit(self, ev: AuditEvent) -> str:
        with self.tx() as s:
            return self._audit(s, ev)

    def audit_heads(self) -> dict[str, tuple[int, str]]:
        """The newest (seq, hash) of every chain, for `verify_chain(..., head=...)`."""
        with self.ro() as s:
            return {h.chain: (h.seq, h.hash) for h in s.scalars(select(m.AuditHead))}

    def audit_events(self, chain: str | None = None, message_uuid: str | None = None) -> list[dict]:
        q = select(m.AuditEvent).order_by(m.AuditEvent.chain, m.AuditEvent.seq)
        if chain:
            q = q.where(m.AuditEvent.chain == chain)
        if message_uuid:
            q = q.where(m.AuditEvent.message_uuid == message_uuid)
        with self.ro() as s:
            return [_row(e) for e in s.scalars(q)]

    # --- tenants -----------------------------------------------------------------

    def add_tenant(self, name: str, display_name: str, kind: str, cvr: str | None,
                   domains: list[str], policy: dict[str, Any], audit: AuditEvent) -> None:
        with self.tx() as s:
            if s.scalar(select(m.Tenant).where(m.Tenant.name == name)):
                raise AlreadyExists(f"tenant {name!r} already exists (see `dp2bridge tenant list`)")
            party = self._party(s, "cvr", cvr, display_name) if cvr else None
            t = m.Tenant(name=name, display_name=display_name, kind=kind, policy=policy,
                         party_id=party.id if party else None, created_at=self.clock.now())
            s.add(t)
            s.flush()
            for d in domains:
                if s.get(m.TenantDomain, d):
                    raise AlreadyExists(f"domain {d} already belongs to a tenant")
                s.add(m.TenantDomain(domain=d, tenant_id=t.id))
            self._audit(s, audit)

    def _party(self, s: Session, kind: str, ident: str, name: str) -> m.Party:
        party = s.scalar(select(m.Party).where(m.Party.kind == kind, m.Party.identifier == ident))
        if party is None:
            party = m.Party(kind=kind, identifier=ident, name=name)
            s.add(party)
            s.flush()
        return party

    def system_account(self, tenant: str) -> int:
        """The id of the tenant's (first) system account; NotFound when it has none."""
        with self.ro() as s:
            found = s.scalar(select(m.Account.id).join(m.Tenant, m.Tenant.id == m.Account.tenant_id).where(
                m.Tenant.name == tenant, m.Account.role == "system", m.Account.disabled.is_(False))
                .order_by(m.Account.id).limit(1))
        if found is None:
            raise NotFound(f"tenant {tenant!r} has no system account; add one with "
                           f"`dp2bridge account add system@<its domain> --system`")
        return found

    def read_by_mdn(self, reader_id: int, original_message_id: str) -> str | None:
        from bridge.store.receipts import read_by_mdn
        return read_by_mdn(self, reader_id, original_message_id)

    def set_policy(self, name: str, policy: dict[str, Any], audit: AuditEvent) -> None:
        with self.tx() as s:
            self._get_tenant(s, name).policy = policy
            self._audit(s, audit)

    def tenants(self) -> list[dict]:
        with self.ro() as s:
            return [self._tenant_dict(s, t) for t in s.scalars(select(m.Tenant).order_by(m.Tenant.name))]

    def tenant(self, name: str) -> dict:
        with self.ro() as s:
            return self._tenant_dict(s, self._get_tenant(s, name), detail=True)

    def _get_tenant(self, s: Session, name: str) -> m.Tenant:
        t = s.scalar(select(m.Tenant).where(m.Tenant.name == name))
        if t is None:
            raise NotFound(f"no tenant named {name!r} (see `dp2bridge tenant list`)")
        return t

    def _tenant_dict(self, s: Session, t: m.Tenant, detail: bool = False) -> dict:
        party = s.get(m.Party, t.party_id) if t.party_id else None
        out = {"name": t.name, "display_name": t.display_name, "kind": t.kind,
               "cvr": party.identifier if party else None,
               "domains": sorted(s.scalars(select(m.TenantDomain.domain).where(
                   m.TenantDomain.tenant_id == t.id))),
               "policy": t.policy, "created_at": t.created_at.isoformat()}
        if detail:
            out["accounts"] = s.scalar(select(func.count()).select_from(m.Account).where(
                m.Account.tenant_id == t.id))
            out["contact_points"] = list(s.scalars(select(m.ContactPoint.address).where(
                m.ContactPoint.tenant_id == t.id).order_by(m.ContactPoint.address)))
        return out

    def _cached(self, key: Any, compute: Callable[[], T]) -> T:
        """Directory lookups asked for every RCPT are cached for CACHE_SECONDS: a change made
        with `dp2bridge` (another process) takes effect within that time."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        value = compute()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, value)
        return value

    def domain_kinds(self) -> dict[str, str]:
        return self._cached("domain_kinds", self._domain_kinds)

    def _domain_kinds(self) -> dict[str, str]:
        with self.ro() as s:
            rows = s.execute(select(m.TenantDomain.domain, m.Tenant.kind).join(
                m.Tenant, m.Tenant.id == m.TenantDomain.tenant_id))
            return {d: k for d, k in rows}

    # --- accounts ----------------------------------------------------------------

    def add_account(self, login: str, tenant: str, display_name: str, cpr: str | None,
                    password_hash: str | None, audit: AuditEvent, system: bool = False) -> None:
        with self.tx() as s:
            t = self._get_tenant(s, tenant)
            self._check_address_free(s, login)
            if t.kind == "citizens":
                party, role = self._party(s, "cpr", cpr or "", display_name), "citizen"
                if s.scalar(select(m.Account).where(m.Account.party_id == party.id)):
                    raise AlreadyExists("that CPR number already has an account")
            else:
                party, role = s.get(m.Party, t.party_id), "system" if system else "staff"
            a = m.Account(tenant_id=t.id, login=login, party_id=party.id, role=role,
                          display_name=display_name, password_hash=password_hash,
                          created_at=self.clock.now())
            s.add(a)
            s.flush()
            self._create_mailboxes(s, account_id=a.id)
            self._audit(s, audit)

    def _check_address_free(self, s: Session, address: str) -> None:
        if s.scalar(select(m.Account.id).where(m.Account.login == address)) or \
                s.scalar(select(m.ContactPoint.id).where(m.ContactPoint.address == address)):
            raise AlreadyExists(f"{address} is already an account or contact point")

    def _create_mailboxes(self, s: Session, account_id: int | None = None,
                          contact_point_id: int | None = None) -> None:
        names = STANDARD_MAILBOXES if account_id else STANDARD_MAILBOXES[:1]
        for name, special in names:
            s.add(m.Mailbox(account_id=account_id, contact_point_id=contact_point_id, name=name,
                            special_use=special, uidvalidity=secrets.randbelow(2**31 - 2) + 1,
                            uidnext=1, highestmodseq=1, subscribed=True,
                            created_at=self.clock.now()))

    def accounts(self, tenant: str | None = None) -> list[dict]:
        q = select(m.Account, m.Tenant.name, m.Party).join(m.Tenant, m.Tenant.id == m.Account.tenant_id) \
            .join(m.Party, m.Party.id == m.Account.party_id).order_by(m.Account.login)
        if tenant:
            q = q.where(m.Tenant.name == tenant)
        with self.ro() as s:
            if tenant:
                self._get_tenant(s, tenant)
            return [{"login": a.login, "tenant": tn, "role": a.role, "display_name": a.display_name,
                     "party": f"{p.kind}:{p.identifier}", "disabled": a.disabled,
                     "created_at": a.created_at.isoformat()} for a, tn, p in s.execute(q)]

    def _get_account(self, s: Session, login: str) -> m.Account:
        a = s.scalar(select(m.Account).where(m.Account.login == login.lower()))
        if a is None:
            raise NotFound(f"no account {login!r} (see `dp2bridge account list`)")
        return a

    def set_password(self, login: str, password_hash: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            self._get_account(s, login).password_hash = password_hash
            self._audit(s, audit)

    def set_disabled(self, login: str, disabled: bool, audit: AuditEvent) -> None:
        with self.tx() as s:
            self._get_account(s, login).disabled = disabled
            self._audit(s, audit)

    def add_app_password(self, login: str, name: str, password_hash: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            a = self._get_account(s, login)
            if s.scalar(select(m.AppPassword.id).where(m.AppPassword.account_id == a.id,
                        m.AppPassword.name == name, m.AppPassword.revoked_at.is_(None))):
                raise AlreadyExists(f"{login} already has an app password named {name!r}; "
                                    f"revoke it first or choose another name")
            s.add(m.AppPassword(account_id=a.id, name=name, password_hash=password_hash,
                                created_at=self.clock.now()))
            self._audit(s, audit)

    def app_passwords(self, login: str) -> list[dict]:
        with self.ro() as s:
            a = self._get_account(s, login)
            rows = s.scalars(select(m.AppPassword).where(m.AppPassword.account_id == a.id)
                             .order_by(m.AppPassword.created_at))
            return [{"name": p.name, "created_at": p.created_at.isoformat(),
                     "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None,
                     "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None} for p in rows]

    def revoke_app_password(self, login: str, name: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            a = self._get_account(s, login)
            p = s.scalar(select(m.AppPassword).where(m.AppPassword.account_id == a.id,
                         m.AppPassword.name == name, m.AppPassword.revoked_at.is_(None)))
            if p is None:
                raise NotFound(f"{login} has no active app password named {name!r} "
                               f"(see `dp2bridge account app-password list {login}`)")
            p.revoked_at = self.clock.now()
            self._audit(s, audit)

    # --- contact points --------------------------------------------------------

    def add_contact_point(self, address: str, tenant: str, name: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            t = self._get_tenant(s, tenant)
            if t.kind == "citizens":
                raise AlreadyExists("citizens tenants have no contact points")
            self._check_address_free(s, address)
            cp = m.ContactPoint(tenant_id=t.id, address=address, name=name, created_at=self.clock.now())
            s.add(cp)
            s.flush()
            self._create_mailboxes(s, contact_point_id=cp.id)
            self._audit(s, audit)

    def _get_contact_point(self, s: Session, address: str) -> m.ContactPoint:
        cp = s.scalar(select(m.ContactPoint).where(m.ContactPoint.address == address.lower()))
        if cp is None:
            raise NotFound(f"no contact point {address!r} (see `dp2bridge contact-point list`)")
        return cp

    def grant(self, address: str, login: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            cp, a = self._get_contact_point(s, address), self._get_account(s, login)
            if a.tenant_id != cp.tenant_id:
                raise NotFound(f"{login} is not staff of the tenant that owns {address}")
            if s.get(m.Grant, (cp.id, a.id)) is None:
                s.add(m.Grant(contact_point_id=cp.id, account_id=a.id, created_at=self.clock.now()))
            self._audit(s, audit)

    def revoke(self, address: str, login: str, audit: AuditEvent) -> None:
        with self.tx() as s:
            cp, a = self._get_contact_point(s, address), self._get_account(s, login)
            g = s.get(m.Grant, (cp.id, a.id))
            if g is None:
                raise NotFound(f"{login} has no grant on {address}")
            s.delete(g)
            self._audit(s, audit)

    def contact_points(self, tenant: str | None = None) -> list[dict]:
        q = select(m.ContactPoint, m.Tenant.name).join(m.Tenant, m.Tenant.id == m.ContactPoint.tenant_id) \
            .order_by(m.ContactPoint.address)
        if tenant:
            q = q.where(m.Tenant.name == tenant)
        with self.ro() as s:
            out = []
            for cp, tn in s.execute(q):
                staff = s.scalars(select(m.Account.login).join(m.Grant, m.Grant.account_id == m.Account.id)
                                  .where(m.Grant.contact_point_id == cp.id).order_by(m.Account.login))
                out.append({"address": cp.address, "name": cp.name, "tenant": tn, "granted": list(staff)})
            return out

    # --- authentication ----------------------------------------------------------

    def credentials(self, login: str) -> tuple[int, str, list[tuple[int | None, str]]] | None:
        """(account id, audit chain, [(app password id or None for the main password, hash)]),
        or None when no enabled account of an enabled tenant has this login."""
        with self.ro() as s:
            conn = s.connection()
            row = conn.execute(_CREDENTIALS, {"login": login.lower()}).first()
            if row is None:
                return None
            account_id, password_hash, disabled, chain, tenant_disabled = row
            if disabled or tenant_disabled:
                return None
            hashes: list[tuple[int | None, str]] = [(None, password_hash)] if password_hash else []
            hashes += [(pid, h) for pid, h in conn.execute(_APP_PASSWORDS, {"account_id": account_id})]
            return account_id, chain, hashes

    def record_login(self, app_password_id: int | None, audit: AuditEvent) -> None:
        with self.tx() as s:
            if app_password_id is not None:
                s.execute(update(m.AppPassword).where(m.AppPassword.id == app_password_id)
                          .values(last_used_at=self.clock.now()))
            self._audit(s, audit)

    def principal(self, account_id: int) -> Principal:
        with self.ro() as s:
            conn = s.connection()
            (aid, login, display_name, role, tid, tname, tkind, policy, pid, pkind, pident) = \
                conn.execute(_PRINCIPAL, {"account_id": account_id}).one()
            cps = conn.execute(_GRANTED, {"account_id": aid}).scalars()
            return Principal(
                account_id=aid, login=login, display_name=display_name, role=role,
                tenant_id=tid, tenant_name=tname, tenant_kind=tkind, party_id=pid,
                party_kind=pkind, party_identifier=pident,
                may_address_cpr=tkind == "authority" or bool(policy.get("may_address_cpr")),
                contact_points=frozenset(cps))

    # --- submission ----------------------------------------------------------------

    def resolve(self, address: Address) -> Target | None:
        return self._cached(("resolve", address.text), lambda: self._resolve(address))

    def _resolve(self, address: Address) -> Target | None:
        with self.ro() as s:
            if address.kind is AddressKind.CPR:
                return self._resolve_party_account(s, "cpr", address.local)
            if address.kind is AddressKind.CVR:
                return self._resolve_cvr(s, address.local)
            if address.kind is AddressKind.LOCAL:
                return self._resolve_local(s, address.text)
        return None

    def _target_account(self, s: Session, a: m.Account) -> Target | None:
        t = s.get(m.Tenant, a.tenant_id)
        if a.disabled or t.disabled:
            return None
        return Target("account", a.id, a.login, t.id, t.kind, a.party_id, t.kind == "citizens")

    def _target_cp(self, s: Session, cp: m.ContactPoint) -> Target | None:
        t = s.get(m.Tenant, cp.tenant_id)
        return None if t.disabled else Target("contact_point", cp.id, cp.address, t.id, t.kind,
                                              t.party_id, False)

    def _resolve_party_account(self, s: Session, kind: str, ident: str) -> Target | None:
        a = s.scalar(select(m.Account).join(m.Party, m.Party.id == m.Account.party_id).where(
            m.Party.kind == kind, m.Party.identifier == ident, m.Account.role == "citizen"))
        return self._target_account(s, a) if a else None

    def _resolve_cvr(self, s: Session, cvr: str) -> Target | None:
        """A CVR address reaches the tenant's default contact point (policy
        `default_contact_point`, else its only or first contact point)."""
        t = s.scalar(select(m.Tenant).join(m.Party, m.Party.id == m.Tenant.party_id).where(
            m.Party.kind == "cvr", m.Party.identifier == cvr))
        if t is None:
            return None
        q = select(m.ContactPoint).where(m.ContactPoint.tenant_id == t.id).order_by(m.ContactPoint.id)
        wanted = t.policy.get("default_contact_point")
        if wanted:
            q = q.where(m.ContactPoint.address == wanted)
        cp = s.scalars(q).first()
        return self._target_cp(s, cp) if cp else None

    def _resolve_local(self, s: Session, text: str) -> Target | None:
        cp = s.scalar(select(m.ContactPoint).where(m.ContactPoint.address == text))
        if cp:
            return self._target_cp(s, cp)
        a = s.scalar(select(m.Account).where(m.Account.login == text))
        return self._target_account(s, a) if a else None

    def corresponded(self, account_id: int, address: str) -> bool:
        """Has this account received a message from `address` (in any of its mailboxes)?"""
        with self.ro() as s:
            q = select(m.MailboxEntry.id).join(m.Mailbox, m.Mailbox.id == m.MailboxEntry.mailbox_id) \
                .join(m.Message, m.Message.id == m.MailboxEntry.message_id) \
                .where(m.Mailbox.account_id == account_id, m.Message.from_address == address).limit(1)
            return s.scalar(q) is not None

    def accept(self, sub: Submission, targets: list[Target], recipients: list[str],
               audit: AuditEvent, info: Any, *, dedup_since: dt.datetime | None = None,
               references: list[str] | None = None, submitted: AuditEvent | None = None,
               refused: list[tuple[str, str, str]] = (), hold_until: dt.datetime | None = None,
               notify: tuple[str, str] | None = None) -> tuple[str, bool]:
        """The message, its delivery jobs, its audit events (`submitted`, then `audit`) and the
        receipts owed for them (SubmissionAcceptance; SubmissionRejection for each of `refused`,
        the (address, status, reason) of recipients refused in the same transaction), in ONE
        transaction (shared with concurrent acceptances, committed before this returns).  The
        recipients' jobs are not due before `hold_until`, if given (the Sent copy is).  With
        `notify` (channel, text) the recipients get a notification row instead of a mailbox copy.
        Returns (uuid, duplicate):
        when the same account submitted the same Message-ID since `dedup_since`, nothing is
        stored and the first acceptance's UUID is returned.  The thread is that of the first
        known message among `references`, else sub.thread_id.  `info` (the blob's
        MessageInfo) is kept as the content row of the accepted blob."""
        def unit(s: Session) -> tuple[str, bool]:
            s.flush()           # statements on the cursor below: whatever the ORM holds goes first
            earlier = self._duplicate(s, sub, dedup_since)
            if earlier:
                return earlier, True
            thread = self._thread_of(s, references or [])
            self._accept(s, replace(sub, thread_id=thread) if thread else sub, targets, recipients,
                         audit, info, submitted, refused, hold_until, notify)
            return sub.uuid, False
        return self._shared(unit)

    def _duplicate(self, s: Session, sub: Submission, since: dt.datetime | None) -> str | None:
        if since is None or not sub.message_id:
            return None
        row = self._run(s, self._q.duplicate, {"sender": sub.sender_account_id, "mid": sub.message_id,
                                                "since": since}).fetchone()
        return row[0] if row else None

    def _thread_of(self, s: Session, message_ids: list[str]) -> str | None:
        if not message_ids:
            return None
        return s.connection().execute(_THREAD_OF, {"ids": message_ids[:100]}).scalar()

    def _accept(self, s: Session, sub: Submission, targets: list[Target], recipients: list[str],
                audit: AuditEvent, info: Any, submitted: AuditEvent | None = None,
                refused: Any = (), hold_until: dt.datetime | None = None,
                notify: tuple[str, str] | None = None) -> None:
        now = self.clock.now()
        q = self._q
        self._content(s, sub.sha256, info)
        cur = self._run(s, q.insert_message, {
            "uuid": sub.uuid, "tenant_id": sub.tenant_id, "message_id": sub.message_id,
            "thread_id": sub.thread_id, "in_reply_to": sub.in_reply_to,
            "sender_account_id": sub.sender_account_id, "sender_party_id": sub.sender_party_id,
            "from_address": sub.from_address, "subject": sub.subject, "sha256": sub.sha256,
            "size": sub.size, "internal_date": sub.internal_date, "origin": sub.origin,
            "session_id": sub.session_id, "state": "accepted", "memo": sub.memo, "auth": sub.auth})
        message_pk = cur.lastrowid if q.sqlite else cur.fetchone()[0]
        jobs = [_job_row(message_pk, "inbox", rcpt, target.id if target.kind == "account" else None,
                         target.id if target.kind == "contact_point" else None, now, hold_until)
                for target, rcpt in zip(targets, recipients)] if notify is None else []
        jobs.append(_job_row(message_pk, "sent", sub.from_address, sub.sender_account_id, None, now))
        self._run_many(s, q.insert_jobs, jobs)
        from bridge.store.receipts import owe
        if notify is not None:
            channel, text = notify
            for rcpt in recipients:
                s.execute(insert(m.Notification).values(
                    tenant_id=sub.tenant_id, message_id=message_pk, channel=channel, recipient=rcpt,
                    text=text, state="queued", created_at=now))
        if submitted is not None:
            self._audit(s, submitted)
        ref = self._audit_ref(s, audit)
        owe(self, s, message_pk=message_pk, event="SubmissionAcceptance", ref=ref,
            owner_account_id=sub.sender_account_id)
        for address, status, reason in refused:
            ref = self._audit_ref(s, replace(audit, kind="recipient.refused", result="refused",
                                             subject=address[:320],
                                             details={"status": status, "reason": reason}))
            owe(self, s, message_pk=message_pk, event="SubmissionRejection", ref=ref, recipient=address,
                owner_account_id=sub.sender_account_id, details={"status": status, "reason": reason})

    # --- delivery ------------------------------------------------------------------

    def claim_jobs(self, limit: int, lease_seconds: float) -> list[Job]:
        """Lease up to `limit` jobs that are due (or whose lease ran out) for `lease_seconds`.
        The claim shares a commit with concurrent acceptances and filings: on SQLite it then
        never waits for the write lock behind them, and it saves a commit of its own."""
        now = self.clock.now()
        token = str(uuid.uuid4())

        def unit(s: Session) -> list[Job]:
            s.flush()
            q = self._q
            claimed = self._run(s, q.claim, {"now": now, "limit": limit, "token": token,
                                             "until": now + dt.timedelta(seconds=lease_seconds)})
            if claimed.rowcount == 0:
                return []
            return [_job_view(row) for row in self._run(s, q.claimed, {"token": token}).fetchall()]
        return self._shared(unit)

    def file(self, job: Job, sha256: str, info: Any, audit: AuditEvent) -> Filed | None:
        """File the job's copy (`sha256`, analysed as `info`) into the owner's INBOX or Sent,
        mark the job done and record the audit event, in one transaction (shared with
        concurrent filings).  None when the job is no longer ours (its lease expired and
        another worker took it)."""
        return self._shared(lambda s: self._file(s, job, sha256, info, audit))

    def file_many(self, items: list[tuple[Job, str, Any, AuditEvent]]) -> list[Filed | None]:
        """`file` for several jobs, in one unit of a shared transaction: all are filed or
        (on an exception) none is."""
        # A message is delivered when its last pending job is filed.  While a later job of the
        # same message waits in `items` (claimed, so pending), that check cannot succeed for
        # an earlier one, so it is left to the last one; or made when the last one turns out
        # not to be ours any more (its lease ran out and another worker took it).
        last = {job.message_pk: i for i, (job, *_) in enumerate(items)}

        def unit(s: Session) -> list[Filed | None]:
            out: list[Filed | None] = []
            owed: set[int] = set()
            for i, (job, sha256, info, audit) in enumerate(items):
                is_last = last[job.message_pk] == i
                filed = self._file(s, job, sha256, info, audit, check_delivered=is_last)
                if filed is not None and not is_last:
                    owed.add(job.message_pk)
                elif filed is None and is_last and job.message_pk in owed:
                    self._mark_delivered(s, job.message_pk)
                out.append(filed)
            return out
        return self._shared(unit)

    def _file(self, s: Session, job: Job, sha256: str, info: Any, audit: AuditEvent,
              check_delivered: bool = True) -> Filed | None:
        s.flush()               # statements on the cursor below: whatever the ORM holds goes first
        q = self._q
        now = self.clock.now()
        done = self._run(s, q.finish_job, {"job_id": job.id, "token": job.lease_token, "now": now})
        if done.rowcount != 1:
            return None
        self._content(s, sha256, info)
        owner = "account_id" if job.owner_kind == "account" else "contact_point_id"
        box_id, uid, modseq = self._take_uid(s, owner, job.owner_id, "Sent" if job.kind == "sent" else "INBOX")
        self._run(s, q.insert_entry, {
            "mailbox_id": box_id, "uid": uid, "message_id": job.message_pk, "sha256": sha256,
            "flags": "\\Seen" if job.kind == "sent" else "",
            "keywords": "" if job.kind == "sent" else " ".join(job.keywords), "modseq": modseq,
            "internal_date": now})
        if check_delivered:
            self._mark_delivered(s, job.message_pk)
        if job.kind == "sent":
            self._audit(s, audit)
        else:
            from bridge.store.receipts import owe
            owe(self, s, message_pk=job.message_pk, event="ContentConsignment", ref=self._audit_ref(s, audit),
                recipient=job.recipient, details={"status": "2.0.0", "delivered_sha256": sha256,
                                                  "owner": job.owner_address})
        return Filed(box_id, uid, modseq, job.message_uuid)

    def _take_uid(self, s: Session, owner: str, owner_id: int, box_name: str) -> tuple[int, int, int]:
        """Take the next UID and MODSEQ of the mailbox `box_name` of an account ("account_id")
        or contact point ("contact_point_id"): (mailbox id, uid, modseq).  A missing Receipts
        mailbox (a user deleted it) is made again.  The mailbox row stays locked until
        commit, so concurrent filings queue up behind it."""
        q = self._q
        row = self._run(s, q.lock_box[owner], {"owner": owner_id, "box_name": box_name}).fetchone()
        if row is None and box_name == "Receipts" and owner == "account_id":
            s.add(m.Mailbox(account_id=owner_id, name="Receipts", special_use=None,
                            uidvalidity=secrets.randbelow(2**31 - 2) + 1, uidnext=1, highestmodseq=1,
                            subscribed=True, created_at=self.clock.now()))
            s.flush()
            row = self._run(s, q.lock_box[owner], {"owner": owner_id, "box_name": box_name}).fetchone()
        box_id, uid, modseq = row
        if not q.sqlite:
            return box_id, uid, modseq        # taken and written by the one statement
        self._run(s, q.set_box, {"box_id": box_id, "new_uidnext": uid + 1, "new_modseq": modseq + 1})
        return box_id, uid, modseq + 1

    def _content(self, s: Session, sha256: str, info: Any) -> None:
        """The content row for a blob, unless it exists (the same bytes filed twice, or by
        another node at the same moment): INSERT ... ON CONFLICT DO NOTHING."""
        if info is None:
            return
        self._run(s, self._q.insert_content, {
            "sha256": sha256, "size": info.size, "header_size": info.header_size,
            "subject": info.subject, "envelope": info.envelope, "body": info.body,
            "created_at": self.clock.now()})

    def _mark_delivered(self, s: Session, message_pk: int) -> None:
        # Lock the message first: two jobs of one message filed at the same moment would
        # otherwise each still see the other as pending (READ COMMITTED on PostgreSQL).  The
        # UPDATE that follows is a new statement, so it sees what the lock waited for.  A
        # message with a job that failed for good stays "failed".  On SQLite the write
        # transaction already holds the database lock: there is nothing more to lock.
        q = self._q
        if not q.sqlite:
            self._run(s, q.lock_message, {"message_pk": message_pk})
        self._run(s, q.mark_delivered, {"message_pk": message_pk})

    def fail_job(self, job: Job, error: str, retry_at: dt.datetime | None, audit: AuditEvent,
                 status: str = "4.0.0") -> None:
        """Record a failed attempt: queued again for `retry_at`, or failed for good (None).
        Does nothing when the job is no longer ours (the lease expired and another worker
        took it, maybe filed it): its outcome is that worker's to record."""
        with self.tx() as s:
            values: dict[str, Any] = {"last_error": error[:2000], "lease_until": None}
            values.update(state="queued", next_attempt_at=retry_at) if retry_at else values.update(state="failed")
            ours = s.execute(update(m.DeliveryJob).where(
                m.DeliveryJob.id == job.id, m.DeliveryJob.state == "running",
                m.DeliveryJob.lease_token == job.lease_token).values(**values))
            if ours.rowcount != 1:
                return
            if retry_at is None:
                s.execute(update(m.Message).where(m.Message.id == job.message_pk).values(state="failed"))
            if retry_at is None and job.kind == "inbox":
                from bridge.store.receipts import owe
                owe(self, s, message_pk=job.message_pk, event="ContentConsignmentFailure",
                    ref=self._audit_ref(s, audit), recipient=job.recipient,
                    details={"status": status, "reason": audit.details.get("reason", ""),
                             "owner": job.owner_address})
            else:
                self._audit(s, audit)

    def release_leases(self) -> int:
        """Make every claimed job claimable again (at start-up).  Safe with several nodes:
        filing checks the lease token, so a job is still filed only once."""
        with self.tx() as s:
            return s.execute(update(m.DeliveryJob).where(m.DeliveryJob.state == "running").values(
                state="queued", lease_token=None, lease_until=None)).rowcount

    def pending_jobs(self) -> int:
        with self.ro() as s:
            return s.scalar(select(func.count()).select_from(m.DeliveryJob).where(
                m.DeliveryJob.state.in_(("queued", "running")))) or 0

    # --- reading mailboxes (tests, trace; IMAP builds on this) -----------------------

    def mailbox_entries(self, owner: str, mailbox: str = "INBOX") -> list[dict]:
        """Entries in the mailbox `mailbox` of the account or contact point `owner`."""
        with self.ro() as s:
            a = s.scalar(select(m.Account).where(m.Account.login == owner.lower()))
            cond = m.Mailbox.account_id == a.id if a else m.Mailbox.contact_point_id == \
                self._get_contact_point(s, owner).id
            box = s.scalar(select(m.Mailbox).where(cond, m.Mailbox.name == mailbox))
            if box is None:
                raise NotFound(f"{owner} has no mailbox {mailbox!r}")
            rows = s.execute(select(m.MailboxEntry, m.Message).join(
                m.Message, m.Message.id == m.MailboxEntry.message_id).where(
                m.MailboxEntry.mailbox_id == box.id).order_by(m.MailboxEntry.uid))
            return [{"uid": e.uid, "modseq": e.modseq, "sha256": e.sha256, "flags": e.flags,
                     "message_uuid": msg.uuid, "message_id": msg.message_id, "thread_id": msg.thread_id,
                     "accepted_sha256": msg.sha256, "from_address": msg.from_address}
                    for e, msg in rows]

    def message(self, message_uuid: str) -> dict | None:
        with self.ro() as s:
            msg = s.scalar(select(m.Message).where(m.Message.uuid == message_uuid))
            return _row(msg) if msg else None


def _forget_transaction(session: Session) -> None:
    """Drop what `SqlStore` kept for the transaction that ended (or its savepoint)."""
    session.info.pop(_HEADS, None)
    cur = session.info.pop(_CURSOR, None)
    if cur is not None:
        cur.close()


def _job_row(message_pk: int, kind: str, recipient: str, account_id: int | None,
             contact_point_id: int | None, now: dt.datetime, due: dt.datetime | None = None) -> dict[str, Any]:
    return {"message_id": message_pk, "kind": kind, "recipient": recipient, "account_id": account_id,
            "contact_point_id": contact_point_id, "state": "queued", "attempts": 0,
            "next_attempt_at": due or now, "created_at": now}


def _job_view(row: Any) -> Job:
    (job_id, kind, recipient, token, attempts, account_id, message_pk, message_uuid, sha256, from_address,
     tenant_name, tenant_kind, sender_login, party_kind, party_ident,
     acct_id, acct_login, cp_id, cp_address, owner_chain, owner_tenant_kind, owner_disabled, auth, memo) = row
    memo = (json.loads(memo) if isinstance(memo, str) else memo) or {}
    if account_id:
        owner_kind, owner_id, owner_address = "account", acct_id, acct_login
    else:
        owner_kind, owner_id, owner_address = "contact_point", cp_id, cp_address
    return Job(id=job_id, kind=kind, recipient=recipient, lease_token=token, attempts=attempts,
               message_pk=message_pk, message_uuid=message_uuid, sha256=sha256, tenant_name=tenant_name,
               from_address=from_address, sender_login=sender_login,
               sender_party=f"{party_kind}:{party_ident}" if party_kind is not None else None,
               sender_tenant_kind=tenant_kind, owner_kind=owner_kind, owner_id=owner_id,
               owner_address=owner_address, owner_chain=owner_chain, owner_tenant_kind=owner_tenant_kind,
               owner_disabled=bool(owner_disabled),
               # a raw driver row: SQLite gives the JSON text, psycopg the decoded value
               auth=list((json.loads(auth) if isinstance(auth, str) else auth) or []),
               keywords=tuple(memo.get("keywords", ())))


def _row(obj: Any) -> dict:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}

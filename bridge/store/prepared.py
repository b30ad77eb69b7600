"""Statements of the hot paths, compiled once per engine and run on the DBAPI cursor.

Submission and delivery run the statements below for every message.  Going through
SQLAlchemy's execution (context, parameter handling, result objects) costs 50-150 us of
CPU per statement here, several times the work SQLite itself does for a one-row statement.
So each is compiled ONCE per engine with SQLAlchemy (same SQL, same bind processors, so
the stored values are exactly what the ORM would store: UTCDateTime, JSON) and run on
the DBAPI cursor of the session's transaction (`Prepared`, `StoreBase._run` in engine.py).
Statements that run once per batch of jobs or per login stay ordinary Core statements,
next to the code that runs them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, exists, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store import models as m

_T = m.Tenant.__table__
_PARTY = m.Party.__table__
_ACCT = m.Account.__table__
_CP = m.ContactPoint.__table__
_BOX = m.Mailbox.__table__
_CONTENT = m.Content.__table__
_MSG = m.Message.__table__
_ENTRY = m.MailboxEntry.__table__
_JOB = m.DeliveryJob.__table__
_EVENT = m.AuditEvent.__table__
_HEAD = m.AuditHead.__table__
_RECEIPT = m.Receipt.__table__

_NOW = bindparam("now", type_=m.UTCDateTime())

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

_REQUIRED = object()


class Prepared:
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
_RECEIPT_COLUMNS = ("evidence_id", "message_id", "event", "recipient", "owner_account_id", "audit_chain",
                    "audit_seq", "audit_hash", "time", "details", "state", "attempts", "next_attempt_at",
                    "created_at")
# A receipt's own message row: no signature results (auth stays NULL, as the ORM left it).
_RECEIPT_MESSAGE_COLUMNS = tuple(c for c in _MESSAGE_COLUMNS if c != "auth")


class HotStatements:
    """The hot statements, compiled for one engine's dialect."""

    def __init__(self, dialect: Any, sqlite: bool) -> None:
        ins = sqlite_insert if sqlite else pg_insert
        self.sqlite = sqlite
        self.duplicate = Prepared(select(_MSG.c.uuid).where(
            _MSG.c.sender_account_id == bindparam("sender"), _MSG.c.message_id == bindparam("mid"),
            _MSG.c.internal_date >= bindparam("since", type_=m.UTCDateTime()),
            _MSG.c.origin != "imap-append")          # a client's own APPENDed copy is no submission
            .order_by(_MSG.c.id).limit(1), dialect)
        # SQLite: the new id is the cursor's lastrowid; PostgreSQL returns it.
        self.insert_message = Prepared(
            insert(_MSG) if sqlite else insert(_MSG).returning(_MSG.c.id), dialect, _MESSAGE_COLUMNS,
            returning=not sqlite)
        self.insert_jobs = Prepared(insert(_JOB), dialect, _JOB_COLUMNS)
        self.insert_content = Prepared(
            ins(_CONTENT).on_conflict_do_nothing(index_elements=["sha256"]), dialect, _CONTENT_COLUMNS)
        self.insert_entry = Prepared(insert(_ENTRY), dialect, _ENTRY_COLUMNS)
        self.insert_event = Prepared(insert(_EVENT), dialect, _EVENT_COLUMNS)
        self.update_head = Prepared(update(_HEAD).where(_HEAD.c.chain == bindparam("head_chain")).values(
            seq=bindparam("new_seq"), hash=bindparam("new_hash")), dialect)
        self.lock_head = Prepared(select(_HEAD.c.seq, _HEAD.c.hash).where(
            _HEAD.c.chain == bindparam("head_chain")).with_for_update(), dialect)
        self.new_head = Prepared(ins(_HEAD).on_conflict_do_nothing(index_elements=["chain"]),
                                  dialect, _HEAD_COLUMNS)
        self.finish_job = Prepared(update(_JOB).where(
            _JOB.c.id == bindparam("job_id"), _JOB.c.state == "running",
            _JOB.c.lease_token == bindparam("token")).values(state="done", done_at=_NOW, lease_until=None),
            dialect)
        # The next UID and MODSEQ of a mailbox, its row locked FOR UPDATE until commit.
        # SQLite: read, then write.  PostgreSQL: one statement, (id, uid, modseq) - the lock is
        # taken in the WITH, and the UPDATE works on the newest version of the locked row.
        self.lock_box: dict[str, Prepared] = {}
        for owner in ("account_id", "contact_point_id"):
            locked = select(_BOX.c.id, _BOX.c.uidnext, _BOX.c.highestmodseq).where(
                _BOX.c[owner] == bindparam("owner"), _BOX.c.name == bindparam("box_name")).with_for_update()
            if not sqlite:
                box = locked.with_only_columns(_BOX.c.id).cte("box")
                locked = update(_BOX).where(_BOX.c.id == box.c.id).values(
                    uidnext=_BOX.c.uidnext + 1, highestmodseq=_BOX.c.highestmodseq + 1,
                ).returning(_BOX.c.id, _BOX.c.uidnext - 1, _BOX.c.highestmodseq)
            self.lock_box[owner] = Prepared(locked, dialect)
        self.set_box = Prepared(update(_BOX).where(_BOX.c.id == bindparam("box_id")).values(
            uidnext=bindparam("new_uidnext"), highestmodseq=bindparam("new_modseq")), dialect)
        self.lock_message = Prepared(
            select(_MSG.c.id).where(_MSG.c.id == bindparam("message_pk")).with_for_update(), dialect)
        self.mark_delivered = Prepared(update(_MSG).where(
            _MSG.c.id == bindparam("message_pk"), _MSG.c.state == "accepted",
            ~exists(select(literal(1)).select_from(_JOB).where(
                _JOB.c.message_id == bindparam("message_pk"),
                or_(_JOB.c.state == "queued", _JOB.c.state == "running")))
        ).values(state="delivered"), dialect)
        # Several nodes on PostgreSQL: a job another claimer has locked is skipped, not waited for.
        self.claim = Prepared(_claim(_CLAIMABLE if sqlite else _CLAIMABLE.with_for_update(skip_locked=True)),
                               dialect)
        self.claimed = Prepared(_JOB_VIEW, dialect)
        # Receipts (store/receipts.py): owed in the transaction of each acceptance and filing,
        # then filed by the receipt worker.
        self.message_sender = Prepared(select(_MSG.c.sender_account_id).where(
            _MSG.c.id == bindparam("message_pk")), dialect)
        self.owe_receipt = Prepared(ins(_RECEIPT).on_conflict_do_nothing(
            index_elements=["message_id", "event", "recipient"]), dialect, _RECEIPT_COLUMNS)
        self.finish_receipt = Prepared(update(_RECEIPT).where(
            _RECEIPT.c.id == bindparam("receipt_id"), _RECEIPT.c.state == "running",
            _RECEIPT.c.lease_token == bindparam("token")).values(state="done", lease_until=None), dialect)
        self.insert_receipt_message = Prepared(
            insert(_MSG) if sqlite else insert(_MSG).returning(_MSG.c.id), dialect, _RECEIPT_MESSAGE_COLUMNS,
            returning=not sqlite)
        self.receipt_filed_as = Prepared(update(_RECEIPT).where(
            _RECEIPT.c.id == bindparam("receipt_id")).values(filed_message_id=bindparam("filed_pk")), dialect)


"""Store fixtures: a migrated SqlStore on SQLite and on PostgreSQL, seeded through the store API.

Seeding uses the store directly (with placeholder password hashes) rather than
`Admin`, so no argon2 runs and the store tests stay fast.  The demo shape is
the same as `dp2bridge init --demo`: an authority with a contact point and a
caseworker, a law firm, and a citizen.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from bridge.clock import FixedClock
from bridge.core.audit import AuditEvent
from bridge.core.identities import Principal, Target, classify
from bridge.core.messages import Submission
from bridge.core.mimeinfo import analyze
from bridge.store.models import Base
from bridge.store.sql import SqlStore
from tests.conftest import PG_SKIP, postgres_admin_url

DIRECTORY = "dp2.test"
CASEWORKER = "sagsbehandler@kommune.dp2.test"
LAWYER = "advokat@advokat.dp2.test"
ANNA = "anna@borger.dp2.test"
JOBCENTER = "jobcenter@kommune.dp2.test"


def store_url(db: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}" if db == "sqlite" else db


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def empty_store(db: str, tmp_path: Path, clock: FixedClock) -> Iterator[SqlStore]:
    """A store on an empty database (not migrated): a fresh one per test, on each engine."""
    store = SqlStore(store_url(db, tmp_path), clock)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def pg_migrated() -> Iterator[str]:
    """One migrated PostgreSQL database for the whole session; `store` empties it per test.
    (Creating, migrating and dropping a database per test costs about a second.)"""
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(PG_SKIP)
    name = f"dp2store_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # Speed only: a commit need not wait for the WAL flush.  Locking, isolation and
        # visibility, which these tests are about, are the same.
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        store = SqlStore(url, FixedClock())
        try:
            store.migrate()
        finally:
            store.close()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy, whatever is still in the source's WAL."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.fixture(scope="session")
def sqlite_migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file that `store` copies for each test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "store.sqlite3"
    store = SqlStore(f"sqlite:///{path}", FixedClock())
    try:
        store.migrate()
    finally:
        store.close()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock) -> Iterator[SqlStore]:
    """A migrated store with no rows, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        copy_sqlite(request.getfixturevalue("sqlite_migrated"), tmp_path / "store.sqlite3")
        store = SqlStore(store_url("sqlite", tmp_path), clock)
    else:
        store = SqlStore(request.getfixturevalue("pg_migrated"), clock)
        with store.write_engine.begin() as conn:        # faster than TRUNCATE on tiny tables
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    try:
        yield store
    finally:
        store.close()


def event(clock: FixedClock, chain: str, kind: str, **kw: object) -> AuditEvent:
    return AuditEvent(time=clock.now(), chain=chain, kind=kind, result="ok", actor="tests",
                      protocol="cli", **kw)  # type: ignore[arg-type]


@dataclass
class Demo:
    store: SqlStore
    clock: FixedClock
    _principals: dict[str, Principal] = field(default_factory=dict)
    _targets: dict[str, Target] = field(default_factory=dict)

    def principal(self, login: str) -> Principal:
        creds = self.store.credentials(login)
        assert creds is not None, login
        return self.store.principal(creds[0])

    def target(self, address: str) -> Target:
        addr = classify(address, DIRECTORY, self.store.domain_kinds())
        target = self.store.resolve(addr)
        assert target is not None, address
        return target

    def accept(self, sender: str, recipients: list[str], body: str = "Hello") -> str:
        """Accept a message through the store API, as BridgeService does; its UUID."""
        p = self._principals.get(sender) or self._principals.setdefault(sender, self.principal(sender))
        msg_id = f"<{uuid.uuid4()}@tests>"
        raw = (f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: test\r\n"
               f"Message-ID: {msg_id}\r\nDate: Fri, 02 Jan 2026 03:04:05 +0000\r\n\r\n{body}\r\n").encode()
        info = analyze(raw)
        sha = hashlib.sha256(raw).hexdigest()
        message_uuid = str(uuid.uuid4())
        sub = Submission(uuid=message_uuid, message_id=msg_id, thread_id=str(uuid.uuid4()),
                         in_reply_to=None, tenant_id=p.tenant_id, sender_account_id=p.account_id,
                         sender_party_id=p.party_id, from_address=sender, subject="test", sha256=sha,
                         size=len(raw), internal_date=self.clock.now(), origin="smtp", session_id="t1")
        targets = [self._targets.get(r) or self._targets.setdefault(r, self.target(r)) for r in recipients]
        self.store.accept(sub, targets, recipients,
                          event(self.clock, p.tenant_name, "submit.accepted", message_uuid=message_uuid,
                                details={"sha256": sha}), info)
        return message_uuid


def seed(store: SqlStore, clock: FixedClock) -> Demo:
    ev = lambda chain, kind: event(clock, chain, kind)  # noqa: E731
    store.add_tenant("kommune", "Demo Kommune", "authority", "29190000", ["kommune.dp2.test"], {},
                     ev("kommune", "tenant.added"))
    store.add_tenant("advokat", "Advokatfirma Demo", "company", "30000000", ["advokat.dp2.test"], {},
                     ev("advokat", "tenant.added"))
    store.add_tenant("borger", "Borgere", "citizens", None, ["borger.dp2.test"], {},
                     ev("borger", "tenant.added"))
    store.add_contact_point(JOBCENTER, "kommune", "Jobcenter", ev("kommune", "contact-point.added"))
    store.add_account(CASEWORKER, "kommune", "Sagsbehandler", None, "x", ev("kommune", "account.added"))
    store.add_account(LAWYER, "advokat", "Advokat", None, "x", ev("advokat", "account.added"))
    store.add_account(ANNA, "borger", "Anna", "0101701234", "x", ev("borger", "account.added"))
    store.grant(JOBCENTER, CASEWORKER, ev("kommune", "contact-point.granted"))
    return Demo(store, clock)


@pytest.fixture
def demo(store: SqlStore, clock: FixedClock) -> Demo:
    return seed(store, clock)
